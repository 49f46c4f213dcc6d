/** JSON with bigints as numbers while exact (up to 2^53), as strings beyond: what the API and `conns --json` print. */
export function toJson(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? (x <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : x.toString()) : x));
}
