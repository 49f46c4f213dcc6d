#!/usr/bin/env node
// The one executable: `sidecar-accel <command>`. Each command's modules are
// imported when that command runs: `help`, `explain` and `status` never load
// the client libraries of the agent (Kubernetes, fastify, gRPC), which take
// most of a second to import.
import fs from 'node:fs';
import os from 'node:os';
import { InputError, UsageError } from './errors.js';
import { parseOptions } from './options.js';
import { loadLab } from './lab.js';
import { StartupError, resolveCgroup } from '../agent/checks.js';

const USAGE = `usage: sidecar-accel <command> [options]

commands:
  agent --config FILE               the node service (see README: config reference)
  status [--config FILE] [--json]   what is attached, which netns are enabled, counters (from the pins)
  conns [--config FILE] [--pod NS/NAME] [--json]
                                    the TCP connections of enabled pods: each direction redirected or on TCP, and why
  uninstall [--config FILE]         detach and unpin every generation; live connections keep working
  explain --pod FILE [--namespace FILE] [--mesh FILE] [--json]
                                    would this pod be accelerated, and which rule decided
  xds-dump --server ADDR [--plaintext] [--json] [--ca FILE] [--token FILE] [--server-name NAME]
           [--node NAME] [--cluster-id ID] [--count N]
                                    subscribe to istiod's workload API like the agent; print what arrives
  help                              this text

lab commands (a source checkout only, as root; not in the agent image):
  demo [--rounds N] [--seconds S]   two Istio-style pods on this machine, acceleration off vs on, live numbers
  bench [--quick] [--json FILE] [--md FILE] [--chart FILE] [--cpus LIST] [--rounds N] [--seconds S]
                                    the benchmark suite: every scenario and workload, interleaved, kernel-verified
`;

/** Set by the commands that clean up on Ctrl-C (demo, bench): what fails after it is the cleanup's echo. */
let interrupted: () => boolean = () => false;

/** Pin root, cgroup, the agent's API address and the host's /proc from a config file, or the defaults. */
async function datapathLocation(configFile: string | undefined): Promise<{ pinRoot: string; cgroup: string; api: string; hostProc: string }> {
  if (!configFile) {
    const { DEFAULT_PIN_ROOT } = await import('../datapath/datapath.js');
    return { pinRoot: DEFAULT_PIN_ROOT, cgroup: resolveCgroup('auto'), api: '127.0.0.1:15081', hostProc: '/proc' };
  }
  const { loadConfigFile } = await import('../config/load.js');
  const c = loadConfigFile(configFile);
  if (!c.ok) throw new StartupError(c.error);
  return { pinRoot: c.config.datapath.pinDir, cgroup: resolveCgroup(c.config.datapath.cgroup), api: c.config.api.listen, hostProc: c.config.kubernetes.hostProc };
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  // `sidecar-accel <command> --help` is a question, not a mistake: the usage, exit 0.
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(USAGE);
    return 0;
  }
  switch (command) {
    case 'agent': {
      const v = parseOptions(rest, { config: { type: 'string' }, 'skip-self-test': { type: 'boolean', default: false } });
      if (!v.config) throw new UsageError('agent needs --config FILE');
      const { Agent } = await import('../agent/agent.js');
      const agent = await Agent.start(v.config, { skipSelfTest: v['skip-self-test'] === true });
      await new Promise<void>((resolve) => {
        const stop = () => { void agent.stop().then(resolve); };
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
      });
      // Pooled keep-alive sockets of the client libraries (API server, istiod)
      // would hold the process open for their idle timeouts; the agent is done.
      process.exit(0);
    }
    case 'status': {
      const v = parseOptions(rest, { config: { type: 'string' }, json: { type: 'boolean', default: false } });
      const { pinRoot, cgroup } = await datapathLocation(v.config);
      const { datapathStatus, statusText } = await import('./status.js');
      const gens = datapathStatus(pinRoot, cgroup);
      process.stdout.write(v.json ? JSON.stringify({ pinRoot, cgroup, generations: gens }, (_k, x: unknown) => (typeof x === 'bigint' ? x.toString() : x)) + '\n' : statusText(gens, pinRoot));
      return 0;
    }
    case 'conns': {
      const v = parseOptions(rest, { config: { type: 'string' }, pod: { type: 'string' }, json: { type: 'boolean', default: false } });
      if (v.pod !== undefined && !/^[^/\s]+\/[^/\s]+$/.test(v.pod)) {
        throw new UsageError(`conns: --pod takes NAMESPACE/NAME, got ${JSON.stringify(v.pod)}`);
      }
      const loc = await datapathLocation(v.config);
      const [{ collectConns, ConnsError }, { connsText }, { podNamesFromAgent }, { toJson }] = await Promise.all([
        import('../conns/kernel.js'), import('../conns/connections.js'), import('../conns/pod-names.js'), import('../util/json.js'),
      ]);
      const names = await podNamesFromAgent(loc.api);
      let report;
      try {
        report = collectConns({ pinRoot: loc.pinRoot, cgroupPath: loc.cgroup, procRoot: loc.hostProc, podOf: (c) => names.byCookie.get(c) ?? null, ...(v.pod ? { pod: v.pod } : {}) });
      } catch (e) {
        if (e instanceof ConnsError) throw new StartupError(e.message + (names.unavailable && v.pod ? ` (${names.unavailable})` : ''));
        throw e;
      }
      if (names.unavailable) report.problems.push(`pods are shown by netns cookie: ${names.unavailable}`);
      process.stdout.write(v.json ? toJson(report) + '\n' : connsText(report.connections, report.pods, report.problems));
      return 0;
    }
    case 'uninstall': {
      const v = parseOptions(rest, { config: { type: 'string' } });
      const { pinRoot, cgroup } = await datapathLocation(v.config);
      const { uninstallAll } = await import('./status.js');
      const removed = uninstallAll(pinRoot, cgroup);
      process.stdout.write(removed.length ? `detached and unpinned: ${removed.join(', ')}\n` : `nothing pinned under ${pinRoot}\n`);
      return 0;
    }
    case 'explain': {
      const v = parseOptions(rest, { pod: { type: 'string' }, namespace: { type: 'string' }, mesh: { type: 'string' }, json: { type: 'boolean', default: false } });
      if (!v.pod) throw new UsageError('explain needs --pod FILE');
      const { explain, explainText } = await import('./explain.js');
      const r = explain({ pod: v.pod, ...(v.namespace ? { namespace: v.namespace } : {}), ...(v.mesh ? { mesh: v.mesh } : {}) });
      process.stdout.write(v.json ? JSON.stringify({ enabled: r.enabled, rule: r.rule, warnings: r.warnings, excludePorts: r.excludePorts, captures: r.captures, pod: r.pod }) + '\n' : explainText(r));
      return 0;
    }
    case 'demo':
    case 'bench': {
      const lab = await loadLab(command);
      interrupted = lab.interrupted;
      return lab.runLabCommand(command, rest);
    }
    case 'xds-dump': {
      const { XDS_ADDRESS_PATTERN, XDS_DEFAULTS } = await import('../config/schema.js');
      const v = parseOptions(rest, {
        server: { type: 'string' }, plaintext: { type: 'boolean', default: false }, json: { type: 'boolean', default: false },
        ca: { type: 'string', default: XDS_DEFAULTS.caFile }, token: { type: 'string' }, 'server-name': { type: 'string' },
        node: { type: 'string' }, 'cluster-id': { type: 'string', default: XDS_DEFAULTS.clusterId }, count: { type: 'string' },
      });
      if (!v.server || !XDS_ADDRESS_PATTERN.test(v.server)) throw new UsageError('xds-dump needs --server HOST:PORT, e.g. istiod.istio-system.svc:15012');
      const count = v.count === undefined ? undefined : Number(v.count);
      if (count !== undefined && (!Number.isInteger(count) || count < 1)) throw new UsageError('xds-dump: --count takes a whole number >= 1');
      if (v.plaintext && v.token) throw new UsageError('xds-dump: --token is never sent in plaintext; drop one of them');
      const token = v.token ?? (fs.existsSync(XDS_DEFAULTS.tokenFile) ? XDS_DEFAULTS.tokenFile : undefined);
      if (!v.plaintext && !fs.existsSync(v.ca!)) throw new StartupError(`xds-dump: CA file ${v.ca} not found (--ca FILE, or --plaintext for a local test server)`);
      // Imported before the signal handlers: no await between them and the run that listens.
      const { runXdsDump } = await import('./xds-dump.js');
      const ac = new AbortController();
      process.once('SIGINT', () => ac.abort());
      process.once('SIGTERM', () => ac.abort());
      await runXdsDump({
        connection: { address: v.server, plaintext: v.plaintext === true, ...(v.plaintext ? {} : { caFile: v.ca!, ...(token ? { tokenFile: token } : {}) }),
          ...(v['server-name'] ? { serverName: v['server-name'] } : {}) },
        nodeName: v.node ?? process.env.NODE_NAME ?? os.hostname(), clusterId: v['cluster-id']!, json: v.json === true,
        ...(count ? { count } : {}), out: process.stdout,
      }, ac.signal);
      return 0;
    }
    case undefined:
    case 'help':
    case '--help':
      process.stdout.write(USAGE);
      return 0;
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  }
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (e: unknown) => {
  if (interrupted()) return; // Ctrl-C: the cleanup exits 130 once done
  if (e instanceof UsageError) {
    process.stderr.write(`sidecar-accel: ${e.message}\n\n${USAGE}`);
    process.exitCode = 2;
  } else if (e instanceof StartupError || e instanceof InputError) {
    process.stderr.write(`sidecar-accel: ${e.message}\n`);
    process.exitCode = e instanceof InputError ? 2 : 1;
  } else {
    process.stderr.write(`sidecar-accel: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  }
});
