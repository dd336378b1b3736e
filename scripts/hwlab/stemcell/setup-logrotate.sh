#!/bin/bash
# Stemcells install the agent's logrotate schedule here; the lab stemcell does not rotate logs.
exit 0
