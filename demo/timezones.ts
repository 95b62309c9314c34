// Where demo users live. Real IANA zones (so `best_hour` must really convert
// to local time: half-hour offsets, southern-hemisphere DST, no-DST zones),
// each with the country, language and locale a user there would report.
// Weights roughly follow a consumer app's audience, not world population.

export interface Zone {
  readonly timezone: string;
  readonly country: string;
  readonly language: string;
  readonly locale: string;
  readonly weight: number;
}

export const ZONES: readonly Zone[] = [
  { timezone: 'America/New_York', country: 'US', language: 'en', locale: 'en-US', weight: 10 },
  { timezone: 'America/Chicago', country: 'US', language: 'en', locale: 'en-US', weight: 6 },
  { timezone: 'America/Denver', country: 'US', language: 'en', locale: 'en-US', weight: 2 },
  { timezone: 'America/Los_Angeles', country: 'US', language: 'en', locale: 'en-US', weight: 6 },
  { timezone: 'America/Toronto', country: 'CA', language: 'en', locale: 'en-CA', weight: 3 },
  { timezone: 'America/Mexico_City', country: 'MX', language: 'es', locale: 'es-MX', weight: 3 },
  { timezone: 'America/Bogota', country: 'CO', language: 'es', locale: 'es-CO', weight: 2 },
  { timezone: 'America/Sao_Paulo', country: 'BR', language: 'pt', locale: 'pt-BR', weight: 5 },
  { timezone: 'America/Argentina/Buenos_Aires', country: 'AR', language: 'es', locale: 'es-AR', weight: 2 },
  { timezone: 'Europe/London', country: 'GB', language: 'en', locale: 'en-GB', weight: 6 },
  { timezone: 'Europe/Paris', country: 'FR', language: 'fr', locale: 'fr-FR', weight: 5 },
  { timezone: 'Europe/Berlin', country: 'DE', language: 'de', locale: 'de-DE', weight: 6 },
  { timezone: 'Europe/Madrid', country: 'ES', language: 'es', locale: 'es-ES', weight: 3 },
  { timezone: 'Europe/Rome', country: 'IT', language: 'it', locale: 'it-IT', weight: 3 },
  { timezone: 'Europe/Amsterdam', country: 'NL', language: 'nl', locale: 'nl-NL', weight: 2 },
  { timezone: 'Europe/Warsaw', country: 'PL', language: 'pl', locale: 'pl-PL', weight: 2 },
  { timezone: 'Europe/Stockholm', country: 'SE', language: 'sv', locale: 'sv-SE', weight: 1 },
  { timezone: 'Europe/Istanbul', country: 'TR', language: 'tr', locale: 'tr-TR', weight: 3 },
  { timezone: 'Africa/Lagos', country: 'NG', language: 'en', locale: 'en-NG', weight: 2 },
  { timezone: 'Africa/Cairo', country: 'EG', language: 'ar', locale: 'ar-EG', weight: 2 },
  { timezone: 'Africa/Johannesburg', country: 'ZA', language: 'en', locale: 'en-ZA', weight: 1 },
  { timezone: 'Asia/Dubai', country: 'AE', language: 'ar', locale: 'ar-AE', weight: 1 },
  { timezone: 'Asia/Kolkata', country: 'IN', language: 'hi', locale: 'hi-IN', weight: 7 },
  { timezone: 'Asia/Kathmandu', country: 'NP', language: 'ne', locale: 'ne-NP', weight: 1 },
  { timezone: 'Asia/Bangkok', country: 'TH', language: 'th', locale: 'th-TH', weight: 2 },
  { timezone: 'Asia/Jakarta', country: 'ID', language: 'id', locale: 'id-ID', weight: 4 },
  { timezone: 'Asia/Singapore', country: 'SG', language: 'en', locale: 'en-SG', weight: 1 },
  { timezone: 'Asia/Shanghai', country: 'CN', language: 'zh', locale: 'zh-CN', weight: 3 },
  { timezone: 'Asia/Tokyo', country: 'JP', language: 'ja', locale: 'ja-JP', weight: 4 },
  { timezone: 'Asia/Seoul', country: 'KR', language: 'ko', locale: 'ko-KR', weight: 2 },
  { timezone: 'Australia/Sydney', country: 'AU', language: 'en', locale: 'en-AU', weight: 2 },
  { timezone: 'Pacific/Auckland', country: 'NZ', language: 'en', locale: 'en-NZ', weight: 1 },
];

const DAY_MS = 86_400_000;

/**
 * UTC offset of a zone, in minutes, cached per UTC day. Intl is far too slow to
 * call per event; offsets change at most twice a year, and an event within
 * hours of a DST switch being an hour off in local time does not matter for
 * demo data (the ISO string written with the offset is still exact, since it
 * is formatted with the same offset the instant was computed from).
 */
export class ZoneOffsets {
  private readonly formatters: Intl.DateTimeFormat[];
  private readonly cache = new Map<number, number>();

  constructor(readonly zones: readonly Zone[] = ZONES) {
    this.formatters = zones.map(
      (z) =>
        new Intl.DateTimeFormat('en-US', {
          timeZone: z.timezone,
          hourCycle: 'h23',
          year: 'numeric',
          month: 'numeric',
          day: 'numeric',
          hour: 'numeric',
          minute: 'numeric',
        }),
    );
  }

  /** Offset (local − UTC) in minutes of zone `zone` around noon UTC of the day holding `ms`. */
  minutesOn(zone: number, ms: number): number {
    const day = Math.floor(ms / DAY_MS);
    const key = day * 64 + zone;
    let off = this.cache.get(key);
    if (off === undefined) {
      off = offsetMinutes(this.formatters[zone]!, day * DAY_MS + DAY_MS / 2);
      this.cache.set(key, off);
    }
    return off;
  }
}

export function offsetMinutes(fmt: Intl.DateTimeFormat, ms: number): number {
  const parts: Record<string, number> = {};
  for (const p of fmt.formatToParts(new Date(ms))) if (p.type !== 'literal') parts[p.type] = Number(p.value);
  const asUtc = Date.UTC(parts.year!, parts.month! - 1, parts.day!, parts.hour!, parts.minute!);
  return Math.round((asUtc - Math.floor(ms / 60_000) * 60_000) / 60_000);
}
