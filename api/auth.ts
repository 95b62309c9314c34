// API keys: each belongs to one app and holds roles. Keys are stored only as
// sha256 hashes (a leaked keys file does not leak keys); a request's bearer
// token is hashed and looked up. `admin` implies every other role.
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import type { Config } from '../lib/config.ts';

export const ROLES = ['ingest', 'read', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/** The tenant id: printable, no separators that could be confused in keys or logs. */
export const AppIdSchema = z.string().min(1).max(128).regex(/^[A-Za-z0-9_.:-]+$/, 'letters, digits and _ . : - only');

export const KeyEntrySchema = z
  .object({
    name: z.string().max(200).optional(),
    app_id: AppIdSchema,
    roles: z.array(z.enum(ROLES)).min(1),
    sha256: z.string().regex(/^[0-9a-f]{64}$/, '64 lowercase hex digits (sha256 of the key)'),
  })
  .strict();

export const KeysFileSchema = z.object({ keys: z.array(KeyEntrySchema) }).strict();
export type KeyEntry = z.infer<typeof KeyEntrySchema>;

export interface ApiKey {
  name?: string;
  appId: string;
  roles: ReadonlySet<Role>;
}

export function hashKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/** A new random key: `wbk_` + 256 bits, base64url. */
export function generateKey(): string {
  return 'wbk_' + randomBytes(32).toString('base64url');
}

export function hasRole(key: ApiKey, role: Role): boolean {
  return key.roles.has('admin') || key.roles.has(role);
}

/** The entries of a keys-file JSON text; errors name `source` (a file or WARBLER_API_KEYS) and the path in it. */
function parseKeyEntries(text: string, source: string): KeyEntry[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`${source}: not valid JSON (${(e as Error).message})`);
  }
  const r = KeysFileSchema.safeParse(json);
  if (!r.success) {
    const lines = r.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new Error(`${source}: invalid keys file:\n${lines.join('\n')}`);
  }
  return r.data.keys;
}

export class KeyStore {
  private readonly byHash = new Map<string, ApiKey>();

  constructor(entries: readonly KeyEntry[]) {
    for (const e of entries) {
      this.byHash.set(e.sha256, { name: e.name, appId: e.app_id, roles: new Set(e.roles) });
    }
  }

  get size(): number {
    return this.byHash.size;
  }

  /** The key a bearer token names, if any. Lookup is by hash, so timing reveals nothing about stored keys. */
  verify(token: string): ApiKey | undefined {
    if (token.length === 0 || token.length > 512) return undefined;
    return this.byHash.get(hashKey(token));
  }

  /** Keys given as plaintext (tests, programs embedding the API). */
  static fromPlain(keys: readonly { key: string; appId: string; roles: Role[]; name?: string }[]): KeyStore {
    return new KeyStore(keys.map((k) => ({ name: k.name, app_id: k.appId, roles: k.roles, sha256: hashKey(k.key) })));
  }

  static parse(text: string, source: string): KeyStore {
    return new KeyStore(parseKeyEntries(text, source));
  }

  static fromFile(file: string): KeyStore {
    return KeyStore.parse(readFileSync(file, 'utf8'), file);
  }

  /**
   * The configured keys: WARBLER_API_KEYS (the keys-file JSON inline, for
   * containers) and/or the keys file. Both may be present; their keys are merged.
   */
  static fromConfig(cfg: Pick<Config, 'keysFile'>, env: NodeJS.ProcessEnv = process.env): KeyStore {
    const entries: KeyEntry[] = [];
    const inline = env.WARBLER_API_KEYS;
    // Errors name their source: a bad value stops the command with a message naming it.
    if (inline) entries.push(...parseKeyEntries(inline, 'WARBLER_API_KEYS'));
    if (existsSync(cfg.keysFile)) entries.push(...parseKeyEntries(readFileSync(cfg.keysFile, 'utf8'), cfg.keysFile));
    if (entries.length === 0) {
      throw new Error(
        `no API keys configured: create ${cfg.keysFile} (run \`warbler serve\` once for a demo admin key) or set WARBLER_API_KEYS`,
      );
    }
    return new KeyStore(entries);
  }
}

export interface DemoKey {
  /** The plaintext key when known (just created, or saved earlier to the key file). */
  key: string | undefined;
  /** The keys file. */
  file: string;
  /** Where the plaintext demo key is kept (mode 600). */
  keyFile: string;
  created: boolean;
}

export const DEMO_APP = 'demo';

/**
 * The local default: when no keys file exists, create one holding a single admin
 * key for the app `demo`; the plaintext is saved (mode 600) to
 * $WARBLER_HOME/demo-admin-key.txt and returned once for printing.
 */
export function ensureDemoKey(cfg: Pick<Config, 'keysFile' | 'WARBLER_HOME'>): DemoKey {
  const keyFile = join(cfg.WARBLER_HOME, 'demo-admin-key.txt');
  if (existsSync(cfg.keysFile)) {
    const key = existsSync(keyFile) ? readFileSync(keyFile, 'utf8').trim() || undefined : undefined;
    return { key, file: cfg.keysFile, keyFile, created: false };
  }
  const key = generateKey();
  mkdirSync(cfg.WARBLER_HOME, { recursive: true });
  writeFileSync(keyFile, key + '\n', { mode: 0o600 });
  chmodSync(keyFile, 0o600);
  const body: z.infer<typeof KeysFileSchema> = {
    keys: [{ name: 'demo admin (local default)', app_id: DEMO_APP, roles: ['admin'], sha256: hashKey(key) }],
  };
  mkdirSync(dirname(cfg.keysFile), { recursive: true });
  // Write-then-rename: a concurrent reader never sees a half-written keys file.
  const tmp = `${cfg.keysFile}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(body, null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, cfg.keysFile);
  return { key, file: cfg.keysFile, keyFile, created: true };
}
