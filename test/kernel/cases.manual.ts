import { Mesh, caseScript } from './mesh.js';
const m = await Mesh.create({ label: 'cases', enable: false });
m.dp.enable(m.cookieA);
for (const pod of [m.a, m.b]) await pod.exec('sysctl', ['-qw', 'net.ipv4.tcp_fastopen=3']);
try {
  let port = 9100;
  for (const c of process.argv.slice(2)) {
    for (const pod of [m.a, m.b]) {
      const before = m.dp.counters();
      const p = m.start(pod, 'python3', [caseScript, c, String(port++)]);
      let out;
      try { out = await p.done(); } catch (e) { out = String(e); }
      const after = m.dp.counters();
      console.log(pod.name === 'a' ? 'ACCEL' : 'PLAIN', JSON.stringify(out), 'redirMsgs', after.redirectedMessages - before.redirectedMessages, 'paired', after.socketsPaired - before.socketsPaired, 'tcpMsgs', after.tcpMessages-before.tcpMessages, 'early', after.fallbackEarlyData-before.fallbackEarlyData, 'nopeer', after.fallbackNoPeer-before.fallbackNoPeer);
    }
  }
} finally { await m.close(); }
