// Serves a fetch-style handler (Hono's `app.fetch`) with Node's http module.
// Request bodies are streamed into the Request (and cut off past the size
// limit); response bodies are streamed out chunk by chunk, waiting for 'drain'
// whenever the socket's buffer is full, so a slow client holds back the
// producer instead of growing memory. When the client goes away, the
// request's signal aborts and the response stream is cancelled, which lets
// handlers stop their ClickHouse queries.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PROBLEM_CONTENT_TYPE, problemType } from './problem.ts';

export type FetchHandler = (req: Request) => Response | Promise<Response>;

export interface NodeServerOptions {
  /** Hard cap on request bodies, whatever the route (routes may set lower limits). */
  maxBodyBytes: number;
  /** Seconds a connection may stay idle between requests. */
  keepAliveTimeoutS?: number;
}

function problemBody(status: number, title: string, detail: string): string {
  // Problems about the input carry `errors`, like every other invalid-input answer (api.md).
  const errors = status === 400 || status === 413 ? { errors: [{ path: 'body', message: detail }] } : {};
  return JSON.stringify({ type: problemType(status === 413 ? 'payload-too-large' : 'bad-request'), title, status, detail, ...errors });
}

class BodyTooLarge extends Error {}

/** How long a client may go on sending a body nobody reads once its answer is out. */
const LINGER_MS = 5000;

/** Cuts the connection of a request whose body still comes LINGER_MS after its answer went out. */
function cutOffWhenAnsweredAndStillSending(req: IncomingMessage, res: ServerResponse): void {
  res.once('finish', () => {
    if (!req.complete) setTimeout(() => req.destroy(), LINGER_MS).unref();
  });
}

export function toRequest(req: IncomingMessage, res: ServerResponse, limit: number, origin: string): Request {
  const controller = new AbortController();
  // 'close' on the response fires when it finishes or when the socket dies;
  // only the latter is an abort.
  res.on('close', () => {
    if (!res.writableFinished) controller.abort(new Error('client closed the connection'));
  });
  const headers = new Headers();
  for (let i = 0; i < req.rawHeaders.length; i += 2) headers.append(req.rawHeaders[i] as string, req.rawHeaders[i + 1] as string);
  const method = req.method ?? 'GET';
  const init: RequestInit & { duplex?: 'half' } = { method, headers, signal: controller.signal };
  if (method !== 'GET' && method !== 'HEAD') {
    let seen = 0;
    // Not destroyed when left early: see stopReading.
    const iterator = req.iterator({ destroyOnReturn: false });
    // A body left unread (past a limit, or refused) is drained and dropped, not
    // cut off: destroying the socket reset the connection before the 413 (or
    // any answer) was written, and closing it with unread input resets it too,
    // so a client streaming a body without a length could not tell "too large"
    // from a network failure. The connection is kept for the rest of the body;
    // a client still sending 5 s after its answer is cut off.
    let stopped = false;
    const stopReading = () => {
      if (stopped) return;
      stopped = true;
      // A 'data' listener makes the request flow once the iterator's own
      // listener is gone (Node resumes a stream with 'data' listeners then).
      req.on('data', () => undefined);
      void Promise.resolve(iterator.return?.()).finally(() => req.resume());
      cutOffWhenAnsweredAndStillSending(req, res);
    };
    init.body = new ReadableStream<Uint8Array>({
      async pull(ctrl) {
        try {
          const { value, done } = await iterator.next();
          if (done) return ctrl.close();
          const chunk = value as Buffer;
          seen += chunk.length;
          if (seen > limit) {
            ctrl.error(new BodyTooLarge(`request body exceeds ${limit} bytes`));
            stopReading();
            return;
          }
          ctrl.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length));
        } catch (e) {
          ctrl.error(e);
        }
      },
      cancel() {
        stopReading();
      },
    });
    init.duplex = 'half';
  }
  return new Request(new URL(req.url ?? '/', origin), init);
}

function waitDrainOrClose(res: ServerResponse): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      res.off('drain', onDrain);
      res.off('close', onClose);
      resolve(ok);
    };
    const onDrain = () => done(true);
    const onClose = () => done(false);
    res.once('drain', onDrain);
    res.once('close', onClose);
  });
}

export async function writeResponse(response: Response, res: ServerResponse): Promise<void> {
  const headers: Record<string, string | string[]> = {};
  response.headers.forEach((value, name) => {
    if (name === 'set-cookie') return;
    headers[name] = value;
  });
  const cookies = response.headers.getSetCookie();
  if (cookies.length) headers['set-cookie'] = cookies;
  res.writeHead(response.status, response.statusText || undefined, headers);
  if (!response.body) {
    res.end();
    return;
  }
  const reader = response.body.getReader();
  try {
    for (;;) {
      if (res.destroyed) {
        await reader.cancel(new Error('client closed the connection'));
        return;
      }
      const { value, done } = await reader.read();
      if (done) break;
      if (!res.write(value)) {
        const open = await waitDrainOrClose(res);
        if (!open) {
          await reader.cancel(new Error('client closed the connection'));
          return;
        }
      }
    }
    res.end();
  } catch (err) {
    // The body failed after the status line went out: the only honest signal
    // left is to cut the connection, so the client sees a truncated answer.
    res.destroy(err instanceof Error ? err : new Error(String(err)));
    await reader.cancel(err).catch(() => undefined);
  }
}

export interface RunningServer {
  server: Server;
  url: string;
  port: number;
  /** Stops accepting, lets in-flight requests finish (up to `graceMs`), then closes idle connections. */
  close(graceMs?: number): Promise<void>;
}

export function createNodeServer(handler: FetchHandler, opts: NodeServerOptions): Server {
  const server = createServer(async (req, res) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > opts.maxBodyBytes) {
      // Drained and dropped while it comes, as in toRequest; cut off if it still comes 5 s after the answer.
      req.resume();
      cutOffWhenAnsweredAndStillSending(req, res);
      res.writeHead(413, { 'content-type': PROBLEM_CONTENT_TYPE });
      res.end(problemBody(413, 'Request body too large', `request body of ${declared} bytes exceeds the limit of ${opts.maxBodyBytes}`));
      return;
    }
    const host = req.headers.host ?? 'localhost';
    let request: Request;
    try {
      request = toRequest(req, res, opts.maxBodyBytes, `http://${host}`);
    } catch (e) {
      res.writeHead(400, { 'content-type': PROBLEM_CONTENT_TYPE });
      res.end(problemBody(400, 'Bad request', (e as Error).message));
      return;
    }
    try {
      const response = await handler(request);
      await writeResponse(response, res);
    } catch (err) {
      if (!res.headersSent) {
        const tooLarge = err instanceof BodyTooLarge || (err as { cause?: unknown })?.cause instanceof BodyTooLarge;
        const status = tooLarge ? 413 : 500;
        res.writeHead(status, { 'content-type': PROBLEM_CONTENT_TYPE });
        res.end(problemBody(status, tooLarge ? 'Request body too large' : 'Internal server error', (err as Error).message));
      } else {
        res.destroy();
      }
    }
  });
  server.keepAliveTimeout = (opts.keepAliveTimeoutS ?? 5) * 1000;
  return server;
}

export async function listen(handler: FetchHandler, opts: NodeServerOptions & { host: string; port: number }): Promise<RunningServer> {
  const server = createNodeServer(handler, opts);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const hostForUrl = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    server,
    port: addr.port,
    url: `http://${hostForUrl}:${addr.port}`,
    close: (graceMs = 10_000) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.closeAllConnections(), graceMs);
        timer.unref();
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        // Idle keep-alive sockets would hold close() open; busy ones finish first.
        server.closeIdleConnections();
      }),
  };
}
