// Switches the bench between "no program of ours anywhere" (baselines) and
// the real agent with a cross-pod setting (accel scenarios). The agent is
// driven like an operator drives it: its config file, hot-reloaded.
import fs from 'node:fs';
import pino from 'pino';
import { Agent } from '../../src/agent/agent.js';
import { applyAgentConfig } from '../../lab/harness/apply-config.js';
import { uninstallAll } from '../../src/cli/status.js';
import type { Pod } from '../../lab/topology/topology.js';
import type { BenchPods } from './pods.js';
import { attachedPrograms } from './verify.js';

const SIDECAR_STATUS = `sidecar.istio.io/status: '{"containers":["istio-proxy"]}'`;
/** What the plain client pod is: its traffic goes to its peer uncaptured (no capture rules in that pod). */
const NO_OUTBOUND_CAPTURE = `traffic.sidecar.istio.io/includeOutboundIPRanges: ''`;

export class AgentControl {
  private agent?: Agent;
  readonly pinRoot: string;
  private readonly cfgFile: string;
  private readonly logFile: string;
  private readonly port = 20000 + Math.floor(Math.random() * 20000);

  constructor(private readonly pods: BenchPods) {
    this.pinRoot = `/sys/fs/bpf/${pods.topo.prefix}`;
    this.cfgFile = pods.topo.file('agent.yaml');
    this.logFile = pods.topo.file('agent.log');
  }

  /** Every pod's cgroup and the topology's: where a baseline must find no sockops program. */
  private cgroups(): string[] {
    return [this.pods.topo.cgroupDir, ...this.pods.topo.pods.map((p) => p.cgroupDir)];
  }

  /**
   * The agent config: every pod sidecar-injected and on through the mesh
   * config, except the plain server pod, which has no sidecar and stands in
   * for a peer that cannot be paired (a pod on another node). The plain
   * client's annotations say what its pod's rules are: none capture its
   * outbound traffic (as Istio's includeOutboundIPRanges: '' would have it).
   */
  private config(crossPod: boolean): string {
    const { mesh, http, plain } = this.pods;
    const pod = (p: Pod, annotations: string[]) =>
      `  - {name: ${p.name}, namespace: bench, netns: ${p.netnsPath}, ips: [${p.ip4}, "${p.ip6}"]${annotations.length ? `, annotations: {${annotations.join(', ')}}` : ''}}`;
    return [
      `api: {listen: 127.0.0.1:${this.port}}`,
      // applications: always. The bench measures the datapath itself, also on a
      // kernel where the self-test would pair only the sidecar's sockets; the
      // report names the self-test's verdict (kernelMode).
      `datapath: {cgroup: ${this.pods.topo.cgroupDir}, requireRootCgroup: false, pinDir: ${this.pinRoot}, crossPod: ${crossPod}, applications: always}`,
      'mesh: {defaultConfig: {proxyMetadata: {SIDECAR_ACCEL: "true"}}}',
      'workloads:',
      ...[mesh.client, mesh.server, http.client, http.server].map((p) => pod(p, [SIDECAR_STATUS])),
      pod(plain.client, [SIDECAR_STATUS, NO_OUTBOUND_CAPTURE]),
      pod(plain.server, []),
      '',
    ].join('\n');
  }

  get running(): Agent | undefined {
    return this.agent;
  }

  /** The agent's start-up self-test verdict on this kernel, once it has run. */
  kernelMode?: string;

  /** Runs the agent with this cross-pod setting; resolves once every injected pod is enabled. */
  async on(crossPod: boolean): Promise<Agent> {
    const text = this.config(crossPod);
    if (!this.agent) {
      fs.writeFileSync(this.cfgFile, text);
      this.agent = await Agent.start(this.cfgFile, {
        log: pino({ base: { component: 'sidecar-accel' } }, pino.destination({ dest: this.logFile, sync: true })),
      });
    }
    const agent = this.agent;
    this.kernelMode = agent.kernelMode;
    await applyAgentConfig(agent, this.cfgFile, text, (ws) =>
      ws.filter((w) => w.enabled && w.state !== 'error').length === 5 && agent.dp.config().crossPod === crossPod);
    return agent;
  }

  /** Stops the agent and removes every program; throws if the kernel still shows one. */
  async off(): Promise<void> {
    if (this.agent) {
      const a = this.agent;
      this.agent = undefined;
      await a.stop();
    }
    uninstallAll(this.pinRoot, this.pods.topo.cgroupDir);
    const left = attachedPrograms(this.pinRoot, this.cgroups());
    if (left) throw new Error(`baseline not clean: ${left}`);
  }

  /** Null when no program of ours is attached, else what is. */
  attached(): string | null {
    return attachedPrograms(this.pinRoot, this.cgroups());
  }
}
