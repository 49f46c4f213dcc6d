// A local HTTP server that speaks the Kubernetes API server's list and watch
// protocol for a few collections, with knobs for what real servers do: end a
// watch, answer 410 Gone, send bookmarks, go away and come back.
import http from 'node:http';
import { EventEmitter } from 'node:events';
import type { AddressInfo } from 'node:net';

interface KObject { metadata: { name: string; namespace?: string; uid?: string; resourceVersion?: string; [k: string]: unknown }; spec?: { nodeName?: string; [k: string]: unknown }; [k: string]: unknown }
interface WatchEvent { type: 'ADDED' | 'MODIFIED' | 'DELETED'; object: KObject; rv: number }

interface Collection {
  items: Map<string, KObject>;
  log: WatchEvent[];
  watchers: Set<{ res: http.ServerResponse; fieldSelector?: string }>;
}

/** Emits `activity` on every request and every watch that closes. */
export class FakeApiServer extends EventEmitter<{ activity: [] }> {
  private server?: http.Server;
  private rv = 100;
  /** Watches below this resource version get 410 Gone. */
  private compactedBelow = 0;
  private readonly collections = new Map<string, Collection>();
  readonly requests: { path: string; query: URLSearchParams }[] = [];
  port = 0;

  private coll(path: string): Collection {
    let c = this.collections.get(path);
    if (!c) { c = { items: new Map(), log: [], watchers: new Set() }; this.collections.set(path, c); }
    return c;
  }

  async start(port = 0): Promise<void> {
    this.server = http.createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(port, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  /** Closes the server and every open watch: clients see connection refused. */
  async stop(): Promise<void> {
    for (const c of this.collections.values()) { for (const w of c.watchers) w.res.destroy(); c.watchers.clear(); }
    await new Promise<void>((resolve) => { this.server?.close(() => resolve()); this.server?.closeAllConnections(); });
    this.server = undefined;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** A kubeconfig file's text pointing at this server (for an agent started as a process). */
  kubeconfig(): string {
    return [
      'apiVersion: v1', 'kind: Config', 'current-context: fake',
      `clusters: [{name: fake, cluster: {server: "${this.url}", insecure-skip-tls-verify: true}}]`,
      'users: [{name: agent, user: {token: test}}]',
      'contexts: [{name: fake, context: {cluster: fake, user: agent}}]', '',
    ].join('\n');
  }

  private matches(o: KObject, fieldSelector?: string): boolean {
    if (!fieldSelector) return true;
    const m = /^spec\.nodeName=(.*)$/.exec(fieldSelector);
    return !m || o.spec?.nodeName === m[1];
  }

  private held?: (() => void)[];

  /** Requests wait unanswered (a slow or starting API server) until release(). */
  hold(): void {
    this.held ??= [];
  }

  release(): void {
    const held = this.held ?? [];
    this.held = undefined;
    for (const h of held) h();
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (this.held) { this.held.push(() => this.handle(req, res)); return; }
    const u = new URL(req.url ?? '/', 'http://x');
    this.requests.push({ path: u.pathname, query: u.searchParams });
    queueMicrotask(() => this.emit('activity'));
    const c = this.collections.get(u.pathname);
    if (!c) { res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'Status', code: 404 })); return; }
    const fieldSelector = u.searchParams.get('fieldSelector') ?? undefined;
    if (u.searchParams.get('watch') !== 'true') {
      const items = [...c.items.values()].filter((o) => this.matches(o, fieldSelector));
      res.writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ kind: 'List', apiVersion: 'v1', metadata: { resourceVersion: String(this.rv) }, items }));
      return;
    }
    const from = Number(u.searchParams.get('resourceVersion') ?? 0);
    res.writeHead(200, { 'content-type': 'application/json' });
    // The API server answers a watch at once, before any event.
    res.flushHeaders();
    if (from < this.compactedBelow) {
      res.end(JSON.stringify({ type: 'ERROR', object: { kind: 'Status', code: 410, reason: 'Expired', message: 'too old resource version' } }) + '\n');
      return;
    }
    for (const e of c.log) if (e.rv > from && this.matches(e.object, fieldSelector)) res.write(JSON.stringify({ type: e.type, object: e.object }) + '\n');
    const w = { res, fieldSelector };
    c.watchers.add(w);
    res.on('close', () => { c.watchers.delete(w); this.emit('activity'); });
  }

  private record(path: string, type: WatchEvent['type'], obj: KObject): void {
    const c = this.coll(path);
    this.rv++;
    const object = { ...obj, metadata: { ...obj.metadata, resourceVersion: String(this.rv) } };
    if (type === 'DELETED') c.items.delete(key(obj)); else c.items.set(key(obj), object);
    const e: WatchEvent = { type, object, rv: this.rv };
    c.log.push(e);
    for (const w of c.watchers) if (this.matches(object, w.fieldSelector)) w.res.write(JSON.stringify({ type, object }) + '\n');
  }

  /** Creates or replaces an object (ADDED or MODIFIED). */
  put(path: string, obj: KObject): void {
    this.record(path, this.coll(path).items.has(key(obj)) ? 'MODIFIED' : 'ADDED', obj);
  }

  /** Changes an object without telling current watchers (as if their events were lost in an outage). */
  putSilently(path: string, obj: KObject): void {
    const c = this.coll(path);
    this.rv++;
    c.items.set(key(obj), { ...obj, metadata: { ...obj.metadata, resourceVersion: String(this.rv) } });
  }

  deleteSilently(path: string, obj: KObject): void {
    this.coll(path).items.delete(key(obj));
    this.rv++;
  }

  delete(path: string, obj: KObject): void {
    this.record(path, 'DELETED', obj);
  }

  /** Ends every open watch of the collection normally (as servers do on timeout). */
  endWatches(path: string): void {
    const c = this.coll(path);
    for (const w of c.watchers) w.res.end();
    c.watchers.clear();
  }

  /** Sends a BOOKMARK at the current resource version to open watches. */
  bookmark(path: string): string {
    this.rv++;
    const rv = String(this.rv);
    for (const w of this.coll(path).watchers) w.res.write(JSON.stringify({ type: 'BOOKMARK', object: { kind: 'Pod', metadata: { resourceVersion: rv } } }) + '\n');
    return rv;
  }

  /** Forgets history: open watches get a 410 ERROR event and end; old resource versions get 410. */
  gone(path: string): void {
    this.compactedBelow = this.rv + 1;
    const c = this.coll(path);
    c.log = [];
    for (const w of c.watchers) w.res.end(JSON.stringify({ type: 'ERROR', object: { kind: 'Status', code: 410, reason: 'Expired' } }) + '\n');
    c.watchers.clear();
  }

  watchersOf(path: string): number {
    return this.coll(path).watchers.size;
  }

  /** Declares a collection (so a list of it answers 200 with no items). */
  collection(path: string): void {
    this.coll(path);
  }
}

function key(o: KObject): string {
  return `${o.metadata.namespace ?? ''}/${o.metadata.name}`;
}
