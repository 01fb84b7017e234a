// Fuzz case counts: the full count in `npm test` and CI; DOTS_FUZZ_SCALE (a fraction, e.g. 0.02
// in `npm run test:unit`) shrinks them for a fast edit-test loop. Seeds stay the same, so a
// smaller run checks a prefix of the same cases.
const raw = process.env.DOTS_FUZZ_SCALE;
const scale = raw === undefined || raw === "" ? 1 : Number(raw);
if (!(scale > 0 && scale <= 1)) throw new Error(`DOTS_FUZZ_SCALE must be a number in (0, 1], got "${raw}"`);

/** `full` cases, scaled by DOTS_FUZZ_SCALE (at least 100, never more than `full`). */
export function fuzzRuns(full: number): number {
  return Math.min(full, Math.max(100, Math.round(full * scale)));
}

/** xorshift32: deterministic so a failing case can be replayed from its seed and index. */
export function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
}

/** Seeded datagram mutator: bit flips, truncation, insertion, and length / epoch / type fields. */
export function mutator(seed: number): { int: (n: number) => number; mutate: (input: Buffer) => Buffer } {
  const next = rng(seed);
  const int = (n: number): number => Math.floor(next() * n);
  const mutate = (input: Buffer): Buffer => {
    let d = Buffer.from(input);
    const ops = 1 + int(4);
    for (let k = 0; k < ops; k++) {
      switch (int(9)) {
        case 0: // bit flips
          for (let j = 0; j < 1 + int(4) && d.length > 0; j++) d[int(d.length)] ^= 1 << int(8);
          break;
        case 1: // interesting byte
          if (d.length > 0) d[int(d.length)] = [0, 0xff, 0x7f, 0x80, 1][int(5)];
          break;
        case 2: // truncate
          d = d.subarray(0, int(d.length + 1));
          break;
        case 3: // insert random bytes
          {
            const at = int(d.length + 1);
            d = Buffer.concat([d.subarray(0, at), randomBytesSeeded(1 + int(16)), d.subarray(at)]);
          }
          break;
        case 4: // record length field
          if (d.length >= 13) d.writeUInt16BE(int(0x10000), 11);
          break;
        case 5: // handshake length / offset / fragment length
          if (d.length >= 25) d.writeUIntBE(int(2) ? int(0x1000000) : int(64), [14, 19, 22][int(3)], 3);
          break;
        case 6: // epoch
          if (d.length >= 13) d.writeUInt16BE([0, 1, 2, 0xffff][int(4)], 3);
          break;
        case 7: // content type
          if (d.length >= 1) d[0] = 20 + int(5);
          break;
        default: // duplicate the datagram's records
          d = Buffer.concat([d, d]);
      }
    }
    return d;
  };
  const randomBytesSeeded = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => int(256)));
  return { int, mutate };
}
