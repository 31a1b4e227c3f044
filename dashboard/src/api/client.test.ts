import { describe, expect, it, vi } from 'vitest';
import { ApiClient, checkReadToken, type FetchFn } from './client';

function respond(status: number, body: string, statusText = ''): FetchFn {
  return vi.fn(async () => new Response(body, { status, statusText }));
}

describe('ApiClient', () => {
  it('parses health, also when the host is down (503)', async () => {
    const ok = await new ApiClient(respond(200, '{"status":"ok","components":{"source":"ok"}}')).health();
    expect(ok).toEqual({ ok: true, status: 200, data: { status: 'ok', components: { source: 'ok' } } });
    const down = await new ApiClient(respond(503, '{"status":"down","components":{}}')).health();
    expect(down.ok && down.data.status).toBe('down');
  });

  it('lists plugins', async () => {
    const r = await new ApiClient(respond(200, '[{"name":"page-views","version":"1.0.0"}]')).plugins();
    expect(r.ok && r.data.map((p) => p.name)).toEqual(['page-views']);
  });

  it('surfaces the API error text', async () => {
    const r = await new ApiClient(respond(409, '{"error":"plugin is swapping"}', 'Conflict')).rollback('x', 't');
    expect(r).toEqual({ ok: false, status: 409, error: 'HTTP 409 Conflict: plugin is swapping' });
    const nf = await new ApiClient(respond(404, 'Not Found')).remove('x', 't');
    expect(nf).toEqual({ ok: false, status: 404, error: 'HTTP 404: Not Found' });
    const empty = await new ApiClient(respond(405, '')).patchConfig('x', {}, 't');
    expect(empty).toEqual({ ok: false, status: 405, error: 'HTTP 405' });
  });

  it('sends the read token with reads, the admin token with changes', async () => {
    const f = vi.fn<FetchFn>(async () => new Response('[]', { status: 200 }));
    const api = new ApiClient(f, '', 'reader');
    await api.plugins();
    expect(f.mock.calls[0]?.[1]?.headers).toEqual({ Authorization: 'Bearer reader' });
    await api.rollback('x', 'admin');
    expect(f.mock.calls[1]?.[1]?.headers).toEqual({ Authorization: 'Bearer admin' });
  });

  it('tells whether reading needs a token and whether it is right', async () => {
    expect(await checkReadToken('', respond(200, '{}'))).toBe('ok');
    expect(await checkReadToken('', respond(401, '{"error":"…"}'))).toBe('needed');
    expect(await checkReadToken('x', respond(403, '{"error":"wrong read token"}'))).toBe('wrong');
    const f = vi.fn<FetchFn>(async () => new Response('{}', { status: 200 }));
    await checkReadToken('t', f);
    expect(f.mock.calls[0]?.[1]?.headers).toEqual({ Authorization: 'Bearer t' });
  });

  it('reports network errors without throwing', async () => {
    const r = await new ApiClient(async () => {
      throw new TypeError('Failed to fetch');
    }).plugins();
    expect(r).toEqual({ ok: false, status: 0, error: 'Network error: Failed to fetch' });
  });

  it('sends the wasm body, auth header and query options', async () => {
    const f = vi.fn<FetchFn>(async () => new Response('{"name":"bot-burst"}', { status: 200 }));
    const wasm = new Uint8Array([0, 97, 115, 109]).buffer;
    const r = await new ApiClient(f).uploadPlugin('bot-burst', wasm, 'secret', { config: { threshold: 30 }, resetState: true });
    expect(r.ok).toBe(true);
    const [url, init] = f.mock.calls[0]!;
    expect(url).toBe('/api/plugins/bot-burst?config=%7B%22threshold%22%3A30%7D&state=reset');
    expect(init!.method).toBe('PUT');
    expect(init!.headers).toMatchObject({ Authorization: 'Bearer secret', 'Content-Type': 'application/wasm' });
    expect(init!.body).toBe(wasm);
  });

  it('sends config patches as JSON and accepts 204', async () => {
    const f = vi.fn<FetchFn>(async () => new Response(null, { status: 204 }));
    const r = await new ApiClient(f).patchConfig('error-rate-spike', { threshold: 0.1 }, 'tok');
    expect(r).toEqual({ ok: true, status: 204, data: {} });
    const [url, init] = f.mock.calls[0]!;
    expect(url).toBe('/api/plugins/error-rate-spike/config');
    expect(init!.method).toBe('PATCH');
    expect(init!.body).toBe('{"threshold":0.1}');
  });
});
