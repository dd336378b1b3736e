#!/usr/bin/env ruby
# frozen_string_literal: true

# Render one BOSH job template the way the director (bosh-template) does, for tests and for
# operators who want to see what a manifest produces, without a director:
#
#   render-template.rb JOB_DIR TEMPLATE PROPERTIES_JSON [SPEC_JSON]
#       prints one template
#   render-template.rb --job JOB_DIR PROPERTIES_JSON OUT_DIR [SPEC_JSON]
#       renders every template of the job, and its monit file, into OUT_DIR (bin/* executable),
#       the layout of /var/vcap/jobs/<job>
#
#   JOB_DIR          e.g. jobs/ironic_cpi (its `spec` file is read for property defaults)
#   TEMPLATE         a key of the spec's `templates` (e.g. cpi.json.erb)
#   PROPERTIES_JSON  the job's properties as the manifest gives them (nested hash), or - for stdin
#   SPEC_JSON        optional overrides of `spec` (name, index, id, address, ip, deployment, az)
#
# The supported subset is what these jobs use: p (with lists of names and a default), if_p with
# .else and .else_if_p, spec, and the rule that only properties declared in the job spec are
# visible, with their spec defaults filled in. Links are not supported (the jobs use none).
# Errors (unknown property, a raise in the template) go to stderr with exit status 1.
# RENDER_TRACE=FILE appends the name of every property the templates ask for to FILE.

require 'erb'
require 'fileutils'
require 'json'
require 'ostruct'
require 'yaml'

class UnknownProperty < StandardError
  def initialize(names)
    super("Can't find property '#{names.join("', or '")}'")
  end
end

class RenderError < StandardError; end

# What bosh-template's EvaluationContext offers a template.
class RenderContext
  attr_reader :name, :index, :properties, :raw_properties, :spec

  def initialize(job_spec, manifest_properties, spec_overrides)
    @name = job_spec.fetch('name')
    @raw_properties = {}
    (job_spec['properties'] || {}).each do |prop, definition|
      value = lookup_property(manifest_properties, prop)
      value = (definition || {})['default'] if value.nil?
      copy_property(@raw_properties, prop, deep_copy(value)) unless value.nil?
    end
    @spec = OpenStruct.new({
      'name' => @name, 'job' => OpenStruct.new(name: @name), 'index' => 0, 'bootstrap' => true,
      'id' => 'c0ffee00-0000-4000-8000-000000000000', 'deployment' => 'bosh',
      'address' => '10.0.0.6', 'ip' => '10.0.0.6', 'az' => 'z1', 'networks' => OpenStruct.new,
      'properties' => @raw_properties
    }.merge(spec_overrides))
    @index = @spec.index
    @properties = @raw_properties
  end

  def get_binding
    binding
  end

  def p(*args)
    names = Array(args[0])
    trace(names)
    names.each do |name|
      value = lookup_property(@raw_properties, name)
      return value unless value.nil?
    end
    return args[1] if args.length == 2

    raise UnknownProperty, names
  end

  def if_p(*names)
    trace(names)
    values = names.map { |name| lookup_property(@raw_properties, name) }
    return ActiveElseBlock.new(self) if values.any?(&:nil?)

    yield(*values)
    InactiveElseBlock.new
  end

  def link(name)
    raise "link('#{name}'): links are not supported by this renderer"
  end

  def if_link(name)
    raise "if_link('#{name}'): links are not supported by this renderer"
  end

  private

  # With RENDER_TRACE=FILE, every property name a template asks for is appended to FILE, so that
  # tests can find spec properties no template reads.
  def trace(names)
    path = ENV.fetch('RENDER_TRACE', '')
    File.open(path, 'a') { |f| names.each { |name| f.puts(name) } } unless path.empty?
  end

  def lookup_property(collection, name)
    name.split('.').reduce(collection) do |node, key|
      return nil unless node.is_a?(Hash) && node.key?(key)

      node[key]
    end
  end

  def copy_property(dst, name, value)
    keys = name.split('.')
    last = keys.pop
    keys.each { |key| dst = (dst[key] ||= {}) }
    dst[last] = value
  end

  def deep_copy(value)
    Marshal.load(Marshal.dump(value))
  end

  # `if_p(...) { }.else { }` when the properties were missing: the else branch runs.
  class ActiveElseBlock
    def initialize(template)
      @template = template
    end

    def else
      yield
    end

    def else_if_p(*names, &block)
      @template.if_p(*names, &block)
    end
  end

  # The properties were present: no else branch runs.
  class InactiveElseBlock
    def else; end

    def else_if_p(*_names)
      InactiveElseBlock.new
    end
  end
end

def render(job_dir, job_spec, template_name, manifest_properties, spec_overrides)
  # A fresh context per template, as bosh-template makes one. (Methods a template defines with
  # `def` land on the context class, in bosh-template as here; the templates do not rely on that.)
  context = RenderContext.new(job_spec, manifest_properties, spec_overrides)
  path = File.join(job_dir, 'templates', template_name)
  template = ERB.new(File.read(path), trim_mode: '-')
  template.filename = path
  template.result(context.get_binding)
rescue StandardError => e
  raise RenderError, "rendering #{template_name}: #{e.message}"
end

def load_json(arg)
  JSON.parse(arg == '-' ? $stdin.read : File.read(arg))
end

def render_job(job_dir, job_spec, manifest_properties, out_dir, spec_overrides)
  job_spec.fetch('templates').each do |template_name, destination|
    target = File.join(out_dir, destination)
    FileUtils.mkdir_p(File.dirname(target))
    File.write(target, render(job_dir, job_spec, template_name, manifest_properties, spec_overrides))
    File.chmod(destination.start_with?('bin/') ? 0o755 : 0o644, target)
  end
  monit = File.join(job_dir, 'monit')
  FileUtils.cp(monit, File.join(out_dir, 'monit')) if File.exist?(monit)
end

def main(argv)
  if argv[0] == '--job'
    _, job_dir, props_arg, out_dir, spec_arg = argv
    unless argv.length.between?(4, 5)
      warn 'usage: render-template.rb --job JOB_DIR PROPERTIES_JSON OUT_DIR [SPEC_JSON]'
      return 2
    end
  else
    job_dir, template_name, props_arg, spec_arg = argv
    unless argv.length.between?(3, 4)
      warn 'usage: render-template.rb JOB_DIR TEMPLATE PROPERTIES_JSON [SPEC_JSON]'
      return 2
    end
  end
  job_spec = YAML.safe_load(File.read(File.join(job_dir, 'spec')))
  manifest_properties = load_json(props_arg)
  spec_overrides = spec_arg ? JSON.parse(File.read(spec_arg)) : {}
  if out_dir
    render_job(job_dir, job_spec, manifest_properties, out_dir, spec_overrides)
  else
    unless (job_spec['templates'] || {}).key?(template_name)
      warn "#{template_name} is not a template of #{job_spec['name']} (#{job_spec['templates'].keys.join(', ')})"
      return 1
    end
    $stdout.write(render(job_dir, job_spec, template_name, manifest_properties, spec_overrides))
  end
  0
rescue StandardError => e
  warn e.message
  1
end

exit(main(ARGV)) if $PROGRAM_NAME == __FILE__
