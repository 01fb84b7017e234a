// RFC 8323 section 5: signalling messages 7.01..7.05 over TCP/TLS. Their option numbers mean
// different things per code, so they are interpreted here and nowhere else.
import { Code, type CoapMessage, type CoapOption } from "./message";
import { CoapFormatError } from "./errors";
import { decodeUint, encodeUint } from "./options";

export const SignalOption = {
  /** CSM */ MaxMessageSize: 2,
  /** CSM */ BlockWiseTransfer: 4,
  /** Ping, Pong */ Custody: 2,
  /** Release */ AlternativeAddress: 2,
  /** Release */ HoldOff: 4,
  /** Abort */ BadCsmOption: 2,
} as const;

/** RFC 8323 section 5.3.1: the Max-Message-Size everyone may assume before a CSM says otherwise. */
export const BASE_MAX_MESSAGE_SIZE = 1152;

export type Signal =
  | { kind: "csm"; maxMessageSize?: number; blockWiseTransfer: boolean }
  | { kind: "ping"; custody: boolean }
  | { kind: "pong"; custody: boolean }
  | { kind: "release"; alternativeAddresses: string[]; holdOffSeconds?: number }
  | { kind: "abort"; badCsmOption?: number; diagnostic: string };

export function isSignalCode(code: number): boolean {
  return code >> 5 === 7;
}

function unknownOption(o: CoapOption, what: string): void {
  // Unknown elective signalling options are ignored; unknown critical ones are a protocol error.
  if ((o.number & 1) === 1) throw new CoapFormatError("BAD_SIGNAL", `unknown critical option ${o.number} in ${what}`);
}

/** Interprets a 7.xx message; throws CoapFormatError when its options break RFC 8323 rules. */
export function parseSignal(msg: CoapMessage): Signal {
  switch (msg.code) {
    case Code.CSM: {
      const s: Signal = { kind: "csm", blockWiseTransfer: false };
      for (const o of msg.options) {
        if (o.number === SignalOption.MaxMessageSize) s.maxMessageSize = decodeUint(o.value, 4);
        else if (o.number === SignalOption.BlockWiseTransfer) {
          if (o.value.length !== 0) throw new CoapFormatError("BAD_SIGNAL", "Block-Wise-Transfer must be empty");
          s.blockWiseTransfer = true;
        } else unknownOption(o, "CSM");
      }
      return s;
    }
    case Code.Ping:
    case Code.Pong: {
      let custody = false;
      for (const o of msg.options) {
        if (o.number === SignalOption.Custody) {
          if (o.value.length !== 0) throw new CoapFormatError("BAD_SIGNAL", "Custody must be empty");
          custody = true;
        } else unknownOption(o, msg.code === Code.Ping ? "Ping" : "Pong");
      }
      return { kind: msg.code === Code.Ping ? "ping" : "pong", custody };
    }
    case Code.Release: {
      const s: Signal = { kind: "release", alternativeAddresses: [] };
      for (const o of msg.options) {
        if (o.number === SignalOption.AlternativeAddress) {
          if (o.value.length < 1 || o.value.length > 255)
            throw new CoapFormatError("BAD_SIGNAL", "Alternative-Address must be 1..255 bytes");
          s.alternativeAddresses.push(o.value.toString("utf8"));
        } else if (o.number === SignalOption.HoldOff) s.holdOffSeconds = decodeUint(o.value, 3);
        else unknownOption(o, "Release");
      }
      return s;
    }
    case Code.Abort: {
      const s: Signal = { kind: "abort", diagnostic: msg.payload.toString("utf8") };
      for (const o of msg.options) {
        if (o.number === SignalOption.BadCsmOption) s.badCsmOption = decodeUint(o.value, 2);
        else unknownOption(o, "Abort");
      }
      return s;
    }
    default:
      throw new CoapFormatError("BAD_SIGNAL", `unknown signalling code 7.${String(msg.code & 0x1f).padStart(2, "0")}`);
  }
}

export function csmMessage(opts: { maxMessageSize?: number; blockWiseTransfer?: boolean } = {}): CoapMessage {
  const options: CoapOption[] = [];
  if (opts.maxMessageSize !== undefined) options.push({ number: SignalOption.MaxMessageSize, value: encodeUint(opts.maxMessageSize) });
  if (opts.blockWiseTransfer) options.push({ number: SignalOption.BlockWiseTransfer, value: Buffer.alloc(0) });
  return { code: Code.CSM, token: Buffer.alloc(0), options, payload: Buffer.alloc(0) };
}

export function pingMessage(token: Buffer, custody = false): CoapMessage {
  return {
    code: Code.Ping,
    token,
    options: custody ? [{ number: SignalOption.Custody, value: Buffer.alloc(0) }] : [],
    payload: Buffer.alloc(0),
  };
}

/** The Pong echoes the Ping's token (RFC 8323 section 5.4). */
export function pongMessage(token: Buffer, custody = false): CoapMessage {
  return {
    code: Code.Pong,
    token,
    options: custody ? [{ number: SignalOption.Custody, value: Buffer.alloc(0) }] : [],
    payload: Buffer.alloc(0),
  };
}

export function releaseMessage(opts: { alternativeAddresses?: string[]; holdOffSeconds?: number } = {}): CoapMessage {
  const options: CoapOption[] = (opts.alternativeAddresses ?? []).map((a) => ({
    number: SignalOption.AlternativeAddress,
    value: Buffer.from(a, "utf8"),
  }));
  if (opts.holdOffSeconds !== undefined) options.push({ number: SignalOption.HoldOff, value: encodeUint(opts.holdOffSeconds) });
  return { code: Code.Release, token: Buffer.alloc(0), options, payload: Buffer.alloc(0) };
}

export function abortMessage(diagnostic: string, badCsmOption?: number): CoapMessage {
  const options: CoapOption[] = badCsmOption === undefined ? [] : [{ number: SignalOption.BadCsmOption, value: encodeUint(badCsmOption) }];
  return { code: Code.Abort, token: Buffer.alloc(0), options, payload: Buffer.from(diagnostic, "utf8") };
}
