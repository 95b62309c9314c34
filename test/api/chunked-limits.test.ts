// A body sent without a length (chunked) past a limit gets its 413 problem, as
// one with a Content-Length does, rather than a reset connection: past a route's
// own limit and past the server's cap alike. Over a real socket (api/node-server.ts).
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listen, type RunningServer } from '../../api/node-server.ts';
import { auth, harness, type Harness } from './harness.ts';

let h: Harness;
let server: RunningServer;
const SERVER_CAP = 1 << 20;

beforeAll(async () => {
  h = await harness({ prefix: 'apichunk' });
  server = await listen(h.app.fetch, { host: '127.0.0.1', port: 0, maxBodyBytes: SERVER_CAP });
});
afterAll(() => server.close(1000));

/** Streams `bytes` of JSON-ish filler in 16 KiB chunks without a Content-Length; resolves with the answer, or rejects when the connection fails first. */
function sendChunked(method: string, path: string, bytes: number): Promise<{ status: number; body: string; connection: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${server.url}${path}`, {
      method,
      // Explicit: Node's client sends a DELETE's body unframed otherwise.
      headers: { ...auth('app_a', 'admin'), 'content-type': 'application/json', 'transfer-encoding': 'chunked' },
    });
    let answered = false;
    req.on('response', (res) => {
      answered = true;
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode!, body, connection: res.headers.connection }));
    });
    // Writes after the answer may fail (the server closes the connection then): that is fine.
    req.on('error', (e) => (answered ? undefined : reject(e)));
    const chunk = Buffer.alloc(16 * 1024, 0x20);
    let sent = 0;
    const pump = () => {
      while (sent < bytes && !answered) {
        sent += chunk.length;
        if (!req.write(chunk)) return void req.once('drain', pump);
      }
      req.end();
    };
    pump();
  });
}

describe('a chunked body past a limit', () => {
  it("gets the route's 413 problem", async () => {
    // Routes without a body take at most 64 KiB.
    const r = await sendChunked('DELETE', '/v1/segments/nonexistent', 200 * 1024);
    expect(r.status, r.body).toBe(413);
    expect(JSON.parse(r.body)).toMatchObject({ status: 413, errors: [{ path: 'body' }] });
  });

  it('gets its 413 even when the client sends the whole body before reading, and the connection then serves another request', async () => {
    // The body is read to its end and dropped: closing with unread input would reset the connection under the answer.
    const socket = connect(server.port, '127.0.0.1');
    await new Promise<void>((r) => socket.once('connect', () => r()));
    let received = '';
    socket.setEncoding('latin1').on('data', (d: string) => (received += d));
    const key = auth('app_a', 'admin').authorization;
    const chunk = ' '.repeat(16 * 1024);
    let body = '';
    for (let i = 0; i < 64; i++) body += `${chunk.length.toString(16)}\r\n${chunk}\r\n`;
    socket.write(`DELETE /v1/segments/nonexistent HTTP/1.1\r\nhost: x\r\nauthorization: ${key}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n${body}0\r\n\r\n`);
    socket.write(`GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n`);
    const until = Date.now() + 10_000;
    while (!/HTTP\/1\.1 200[\s\S]*\r\n\r\n/.test(received) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    socket.destroy();
    expect(received).toMatch(/^HTTP\/1\.1 413 /);
    expect(received).toMatch(/"status":413/);
    expect(received).toMatch(/HTTP\/1\.1 200 /);
  });

  it("gets the server cap's 413 problem", async () => {
    const r = await sendChunked('POST', '/v1/segments/evaluate', 4 * SERVER_CAP);
    expect(r.status).toBe(413);
    expect(JSON.parse(r.body)).toMatchObject({ status: 413, errors: [{ path: 'body', message: expect.stringMatching(/exceeds/) }] });
  });

  it('leaves the server answering', async () => {
    const res = await fetch(`${server.url}/healthz`);
    expect(res.status).toBe(200);
  });
});
