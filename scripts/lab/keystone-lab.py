"""Run the lab's Keystone (src/lab/keystone.rs starts this with the Keystone venv's python).

    keystone-lab.py setup CONF "db_sync" "fernet_setup ..." ...
        runs keystone-manage commands one after the other in this one interpreter: importing
        Keystone costs seconds, and a keystone-manage process per command pays it every time.
    keystone-lab.py serve CONF HOST PORT
        serves Keystone's WSGI application with cheroot (the pure-Python server Ironic's API
        runs on too).

Keystone's configuration parses sys.argv, so this script's own arguments are removed first.
The bootstrap password comes from OS_BOOTSTRAP_PASSWORD, not the command line.
"""

import os
import sys


def setup(conf, steps):
    from keystone.cmd import cli
    from keystone.conf import CONF

    for step in steps:
        # keystone-manage parses its command line once per process; clear it for the next one.
        CONF.clear()
        cli.main(["keystone-manage", "--config-file", conf] + step.split())


def serve(conf, host, port):
    os.environ["OS_KEYSTONE_CONFIG_FILES"] = conf
    from cheroot import wsgi
    from keystone.wsgi.api import application

    server = wsgi.Server((host, port), application, numthreads=8, server_name="keystone")
    server.safe_start()


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    del sys.argv[1:]
    if mode == "setup":
        setup(args[0], args[1:])
    elif mode == "serve":
        serve(args[0], args[1], int(args[2]))
    else:
        sys.exit(f"unknown mode {mode!r}: setup or serve")


if __name__ == "__main__":
    main()
