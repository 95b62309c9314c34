// Behavioural archetypes of demo users. Each is a distinct point in the space
// the profile job measures (recency, frequency, monetary, events_30d,
// active_days_30d, views per purchase), far enough apart that clustering the
// profiles recovers them — that is what the demo is for.
//
// Volumes are tuned so 100k users over 90 days give roughly 2–4M events.

export const ARCHETYPE_NAMES = ['browser', 'loyal_buyer', 'bargain_hunter', 'lapsed', 'newcomer'] as const;
export type ArchetypeName = (typeof ARCHETYPE_NAMES)[number];

/** Track events a session is made of, besides app_open and the purchase funnel. */
export const SESSION_EVENTS = ['view', 'click', 'search', 'share', 'add_to_cart'] as const;
export type SessionEvent = (typeof SESSION_EVENTS)[number];

/** A [min, max] range drawn uniformly once per user. */
export type Range = readonly [number, number];

export interface Archetype {
  readonly name: ArchetypeName;
  /** Share of users. The shares sum to 1. */
  readonly share: number;
  /**
   * When the user is active, in days before `end`. `span` ranges are fractions
   * of the generated span (established users were around before it started);
   * `days` ranges are absolute (a newcomer is new whatever the span).
   */
  readonly firstActive: { readonly unit: 'span' | 'days'; readonly range: Range };
  readonly lastActive: { readonly unit: 'span' | 'days'; readonly range: Range };
  /** Probability that a day inside the active window has any session. */
  readonly activeDayProb: Range;
  /** Mean extra sessions on an active day (Poisson), on top of the first. */
  readonly extraSessions: number;
  /** Mean number of browsing events in a session (geometric, at least 1). */
  readonly eventsPerSession: number;
  /** Relative weights of SESSION_EVENTS, in that order. */
  readonly mix: readonly [number, number, number, number, number];
  /** Probability that a session ends in a purchase. */
  readonly purchaseProb: Range;
  /** Purchase amount ~ exp(N(mu, sigma)), in USD. */
  readonly amount: { readonly mu: number; readonly sigma: number };
  /** Share of sessions started in the user's peak hour; the rest follow DAILY_CURVE. */
  readonly peakStrength: Range;
  /** Relative weight of each local hour 0..23 as a user's peak hour. */
  readonly peakHours: readonly number[];
  /** Share of item picks from the user's preferred categories (the rest follow global popularity). */
  readonly categoryLoyalty: number;
  /** Probability of clicking through from a push (app_open source 'push'). */
  readonly pushOpenProb: number;
}

const EVENING = hours({ 18: 2, 19: 4, 20: 6, 21: 6, 22: 4, 23: 2 });
const DAYTIME = hours({ 7: 3, 8: 4, 9: 2, 12: 5, 13: 4, 17: 2, 18: 2 });
const ANY = hours({ 7: 2, 8: 2, 9: 1, 10: 1, 11: 1, 12: 3, 13: 2, 14: 1, 15: 1, 16: 1, 17: 2, 18: 2, 19: 3, 20: 3, 21: 3, 22: 2, 23: 1 });

export const ARCHETYPES: readonly Archetype[] = [
  {
    name: 'browser',
    share: 0.35,
    firstActive: { unit: 'span', range: [0.85, 1] },
    lastActive: { unit: 'days', range: [0, 5] },
    activeDayProb: [0.1, 0.13],
    extraSessions: 0.3,
    eventsPerSession: 1.5,
    mix: [70, 12, 12, 5, 1],
    purchaseProb: [0, 0.002],
    amount: { mu: Math.log(30), sigma: 0.6 },
    peakStrength: [0.5, 0.7],
    peakHours: EVENING,
    categoryLoyalty: 0.4,
    pushOpenProb: 0.05,
  },
  {
    name: 'loyal_buyer',
    share: 0.15,
    firstActive: { unit: 'span', range: [0.9, 1] },
    lastActive: { unit: 'days', range: [0, 3] },
    activeDayProb: [0.08, 0.15],
    extraSessions: 0.2,
    eventsPerSession: 2,
    mix: [60, 15, 10, 5, 10],
    purchaseProb: [0.5, 0.7],
    amount: { mu: Math.log(90), sigma: 0.45 },
    peakStrength: [0.55, 0.75],
    peakHours: ANY,
    categoryLoyalty: 0.8,
    pushOpenProb: 0.25,
  },
  {
    name: 'bargain_hunter',
    share: 0.2,
    firstActive: { unit: 'span', range: [0.8, 1] },
    lastActive: { unit: 'days', range: [0, 10] },
    activeDayProb: [0.08, 0.14],
    extraSessions: 0.5,
    eventsPerSession: 2,
    mix: [50, 25, 20, 3, 2],
    purchaseProb: [0.18, 0.28],
    amount: { mu: Math.log(8), sigma: 0.4 },
    peakStrength: [0.5, 0.7],
    peakHours: DAYTIME,
    categoryLoyalty: 0.6,
    pushOpenProb: 0.4,
  },
  {
    name: 'lapsed',
    share: 0.2,
    firstActive: { unit: 'span', range: [0.75, 1] },
    lastActive: { unit: 'days', range: [35, 75] },
    activeDayProb: [0.12, 0.25],
    extraSessions: 0.1,
    eventsPerSession: 2,
    mix: [65, 15, 12, 5, 3],
    purchaseProb: [0.4, 0.6],
    amount: { mu: Math.log(35), sigma: 0.6 },
    peakStrength: [0.5, 0.7],
    peakHours: EVENING,
    categoryLoyalty: 0.5,
    pushOpenProb: 0.02,
  },
  {
    name: 'newcomer',
    share: 0.1,
    firstActive: { unit: 'days', range: [4, 12] },
    lastActive: { unit: 'days', range: [0, 1] },
    activeDayProb: [0.75, 0.95],
    extraSessions: 1.2,
    eventsPerSession: 3.5,
    mix: [65, 15, 15, 3, 2],
    purchaseProb: [0, 0.03],
    amount: { mu: Math.log(25), sigma: 0.5 },
    peakStrength: [0.5, 0.7],
    peakHours: ANY,
    categoryLoyalty: 0.3,
    pushOpenProb: 0.1,
  },
];

/** How likely a session is to start in each local hour, for sessions outside the user's peak hour. */
export const DAILY_CURVE: readonly number[] = [
  1.5, 0.8, 0.4, 0.3, 0.3, 0.6, 1.5, 3.5, 4.5, 4, 3.5, 3.8, 5, 4.8, 3.8, 3.5, 3.8, 4.5, 5.5, 6.5, 7, 6.5, 5, 3,
];

export const CATEGORIES = [
  'electronics', 'fashion', 'home', 'beauty', 'sports', 'books', 'toys', 'grocery', 'garden', 'automotive', 'pets', 'music',
] as const;

/** Share of catalogue items in each category (same order as CATEGORIES). */
export const CATEGORY_WEIGHTS: readonly number[] = [14, 18, 12, 10, 8, 9, 6, 9, 4, 3, 4, 3];

/** Preferred categories per archetype (weights over CATEGORIES); users draw two from these. */
export const CATEGORY_TASTE: Readonly<Record<ArchetypeName, readonly number[]>> = {
  browser: [5, 5, 3, 3, 3, 3, 2, 1, 1, 2, 1, 3],
  loyal_buyer: [6, 5, 3, 5, 2, 2, 1, 2, 1, 1, 2, 1],
  bargain_hunter: [2, 6, 5, 2, 2, 1, 3, 7, 2, 1, 2, 1],
  lapsed: [4, 4, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2],
  newcomer: [4, 4, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2],
};

export const PLATFORMS = ['ios', 'android', 'web'] as const;
export type Platform = (typeof PLATFORMS)[number];
export const PLATFORM_WEIGHTS: readonly number[] = [40, 45, 15];
/** Probability a user on each platform allows push notifications. */
export const PUSH_OPT_IN: Readonly<Record<Platform, number>> = { ios: 0.55, android: 0.75, web: 0.2 };

/** App versions, oldest first, with the share of users starting on each. */
export const APP_VERSIONS = ['3.8.2', '3.9.0', '3.9.1', '4.0.0', '4.1.0'] as const;
export const APP_VERSION_WEIGHTS: readonly number[] = [5, 10, 25, 35, 25];

export const CLICK_TARGETS = ['banner', 'recommendation', 'push', 'cta_buy', 'email_link', 'category_tile'] as const;
export const SHARE_CHANNELS = ['whatsapp', 'messenger', 'copy_link', 'email', 'sms'] as const;
export const SEARCH_TERMS = [
  'headphones', 'running shoes', 'dress', 'coffee', 'phone case', 'lego', 'sofa', 'lipstick', 'novel', 'dog food',
  'garden hose', 'vinyl', 'jacket', 'charger', 'yoga mat', 'tent', 'sale', 'gift', 'kids', 'discount',
] as const;

function hours(weights: Record<number, number>): number[] {
  const out = new Array<number>(24).fill(0);
  for (const [h, w] of Object.entries(weights)) out[Number(h)] = w;
  return out;
}
