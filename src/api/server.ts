// The read-only HTTP API. Nothing here changes the datapath: the toggles are
// the mesh config and annotations. Unknown paths are 404, other methods on
// known paths 405, request bodies are capped, and a bad request is never a 500.
import type { XdsHealth } from '../workloads/xds.js';
import Fastify, { type FastifyInstance } from 'fastify';
import type { AgentMetrics } from './metrics.js';
import type { Counters } from '../datapath/layout.js';
import type { WorkloadStatus } from '../reconcile/reconciler.js';
import type { ConnsReport } from '../conns/kernel.js';
import { toJson } from '../util/json.js';

export interface ApiState {
  ready(): { ready: boolean; reason?: string };
  workloads(): WorkloadStatus[];
  /** Connections of the enabled pods (all, or those with an end in pod "namespace/name"); throws ConnsQueryError for an unknown pod or unreadable state. */
  conns(pod?: string): ConnsReport;
  stats(): { node: Counters; generation: string; attached: boolean; crossPod: boolean; xds: XdsHealth | null; workloads: { namespace: string; name: string; counters: Counters | null }[] };
}

const ROUTES = ['/healthz', '/readyz', '/metrics', '/v1/workloads', '/v1/stats', '/v1/conns'];

/** A /v1/conns query the agent cannot answer: 404 for a pod it does not know, 503 when the kernel state cannot be read; with the message. */
export class ConnsQueryError extends Error {
  constructor(message: string, readonly status: 404 | 503 = 404) {
    super(message);
  }
}


export function buildApi(state: ApiState, metrics: AgentMetrics): FastifyInstance {
  const app = Fastify({ logger: false, bodyLimit: 1024, return503OnClosing: true });
  const json = (body: unknown) => toJson(body);
  app.get('/healthz', async (_req, reply) => reply.type('application/json').send(json({ status: 'ok' })));
  app.get('/readyz', async (_req, reply) => {
    const r = state.ready();
    return reply.code(r.ready ? 200 : 503).type('application/json').send(json(r));
  });
  app.get('/metrics', async (_req, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()));
  app.get('/v1/workloads', async (_req, reply) => reply.type('application/json').send(json({ workloads: state.workloads() })));
  app.get('/v1/stats', async (_req, reply) => reply.type('application/json').send(json(state.stats())));
  app.get('/v1/conns', async (req, reply) => {
    const q = req.query as Record<string, unknown>;
    const pod = q.pod;
    if (pod !== undefined && (typeof pod !== 'string' || !/^[^/\s]+\/[^/\s]+$/.test(pod))) {
      return reply.code(400).type('application/json').send(json({ error: 'pod takes NAMESPACE/NAME, once' }));
    }
    try {
      return await reply.type('application/json').send(json(state.conns(pod)));
    } catch (e) {
      if (e instanceof ConnsQueryError) return reply.code(e.status).type('application/json').send(json({ error: e.message }));
      throw e;
    }
  });
  for (const url of ROUTES) {
    app.route({ method: ['POST', 'PUT', 'PATCH', 'DELETE'], url, handler: async (_req, reply) =>
      reply.code(405).header('allow', 'GET, HEAD').type('application/json').send(json({ error: 'read-only API: only GET and HEAD' })) });
  }
  app.setNotFoundHandler(async (req, reply) => reply.code(404).type('application/json').send(json({ error: `no such endpoint: ${req.method} ${req.url.slice(0, 200)}` })));
  app.setErrorHandler(async (err: { statusCode?: number; message?: string }, _req, reply) => {
    const code = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    return reply.code(code).type('application/json').send(json({ error: code === 500 ? 'internal error' : err.message }));
  });
  return app;
}
