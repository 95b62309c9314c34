// Keys: stored hashed, validated with paths, merged from file and env; the demo key is made once.
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ensureDemoKey, hashKey, hasRole, KeyStore } from '../../api/auth.ts';

describe('API keys', () => {
  it('verifies by hash and maps roles; admin implies the others', () => {
    const store = KeyStore.fromPlain([
      { key: 'k-ingest', appId: 'a', roles: ['ingest'] },
      { key: 'k-admin', appId: 'b', roles: ['admin'] },
    ]);
    const ingest = store.verify('k-ingest')!;
    expect(ingest.appId).toBe('a');
    expect(hasRole(ingest, 'ingest')).toBe(true);
    expect(hasRole(ingest, 'read')).toBe(false);
    const admin = store.verify('k-admin')!;
    expect(['ingest', 'read', 'admin'].every((r) => hasRole(admin, r as 'read'))).toBe(true);
    expect(store.verify('k-admin ')).toBeUndefined();
    expect(store.verify('')).toBeUndefined();
  });

  it('rejects a malformed keys file with the path of the problem', () => {
    expect(() => KeyStore.parse('{"keys":[{"app_id":"a","roles":["root"],"sha256":"00"}]}', 'keys.json')).toThrow(/keys\.0\.roles\.0[\s\S]*keys\.0\.sha256/);
    expect(() => KeyStore.parse('{', 'keys.json')).toThrow(/not valid JSON/);
    expect(() => KeyStore.parse('{"keys":[],"extra":1}', 'keys.json')).toThrow(/extra/);
  });

  it('merges the keys file and WARBLER_API_KEYS, and refuses to start with none', () => {
    const dir = mkdtempSync(join(tmpdir(), 'warbler-keys-'));
    const keysFile = join(dir, 'keys.json');
    expect(() => KeyStore.fromConfig({ keysFile }, {})).toThrow(/no API keys configured/);
    writeFileSync(keysFile, JSON.stringify({ keys: [{ app_id: 'a', roles: ['read'], sha256: hashKey('one') }] }));
    const env = { WARBLER_API_KEYS: JSON.stringify({ keys: [{ app_id: 'b', roles: ['ingest'], sha256: hashKey('two') }] }) };
    const store = KeyStore.fromConfig({ keysFile }, env);
    expect(store.size).toBe(2);
    expect(store.verify('one')?.appId).toBe('a');
    expect(store.verify('two')?.appId).toBe('b');
    // A bad value stops start-up with a message naming where it came from.
    expect(() => KeyStore.fromConfig({ keysFile }, { WARBLER_API_KEYS: '{"keys": [' })).toThrow(/^WARBLER_API_KEYS: not valid JSON/);
    expect(() => KeyStore.fromConfig({ keysFile }, { WARBLER_API_KEYS: '{"keys":[{"app_id":"a","roles":[],"sha256":"00"}]}' })).toThrow(
      /^WARBLER_API_KEYS: invalid keys file:[\s\S]*keys\.0\.roles/,
    );
    writeFileSync(keysFile, '{"keys": 1}');
    expect(() => KeyStore.fromConfig({ keysFile }, {})).toThrow(new RegExp(`^${keysFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: invalid keys file`));
  });

  it('creates the demo admin key once, hashed in the keys file and readable only by the owner', () => {
    const home = mkdtempSync(join(tmpdir(), 'warbler-demo-'));
    const cfg = { WARBLER_HOME: home, keysFile: join(home, 'keys.json') };
    const first = ensureDemoKey(cfg);
    expect(first.created).toBe(true);
    expect(first.key).toMatch(/^wbk_[A-Za-z0-9_-]{43}$/);
    expect(statSync(first.keyFile).mode & 0o777).toBe(0o600);
    expect(readFileSync(cfg.keysFile, 'utf8')).not.toContain(first.key);
    expect(KeyStore.fromFile(cfg.keysFile).verify(first.key!)).toMatchObject({ appId: 'demo' });
    const again = ensureDemoKey(cfg);
    expect(again).toMatchObject({ created: false, key: first.key, file: cfg.keysFile });
  });
});
