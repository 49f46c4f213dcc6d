import { Mesh, APP_PORT } from './mesh.js';
const m = await Mesh.create({ label: 'smoke', crossPod: process.argv[2] === 'x' });
try {
  const srv = m.startPeer(m.b, ['server', '--listen', `0.0.0.0:${APP_PORT}`, '--bytes', '3000000']);
  await srv.ready();
  const cli = m.startPeer(m.a, ['client', '--connect', m.vip(), '--bytes', '5000000', '--conns', '3']);
  const lines = await cli.done();
  console.log(lines);
  console.log(srv.lines);
  console.log(m.counters());
  console.log((await m.a.exec('ss', ['-tni'])).stdout);
} finally {
  await m.close();
}
