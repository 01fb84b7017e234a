// Editor-side address and prefix rules of @dots-call-home/node-red, served by Node-RED at
// resources/@dots-call-home/node-red/dots-editor-rules.js and loaded by the nodes' edit dialogs.
// The same rules as the runtime's src/dots/prefixes.ts (strict inet:ip-prefix: four-part decimal
// IPv4 without leading zeros, IPv6 with at most one "::" and an optional dotted tail, no zone, a
// decimal length within the family, no host bits); test/unit/dots/editor-rules.test.ts runs both on
// one table and on random strings. Plain ES5: it runs in every browser Node-RED supports.
(function (root) {
  "use strict";
  var V4 = /^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$/;
  var LENGTH = /^(0|[1-9][0-9]{0,2})$/;

  function ipv4Bytes(text) {
    var m = V4.exec(text);
    if (!m) return null;
    var out = [];
    for (var i = 1; i <= 4; i++) {
      if (m[i].length > 3 || Number(m[i]) > 255) return null;
      out.push(Number(m[i]));
    }
    return out;
  }

  function groups(part) {
    if (part === "") return [];
    var list = part.split(":");
    for (var i = 0; i < list.length; i++) if (!/^[0-9A-Fa-f]{1,4}$/.test(list[i])) return null;
    return list;
  }

  function ipv6Bytes(text) {
    if (text.indexOf("%") >= 0 || !/^[0-9A-Fa-f:.]+$/.test(text)) return null;
    var tail = [];
    var hex = text;
    var lastColon = text.lastIndexOf(":");
    if (text.indexOf(".") >= 0) {
      tail = ipv4Bytes(text.slice(lastColon + 1));
      if (!tail) return null;
      hex = text.slice(0, lastColon + 1);
      // "::1.2.3.4" keeps its "::"; "1:2:3:4:5:6:1.2.3.4" leaves a trailing ":" to drop.
      if (hex.slice(-2) !== "::") hex = hex.slice(0, -1);
    }
    var tailGroups = tail.length / 2;
    var halves = hex.split("::");
    if (halves.length > 2) return null;
    var head = groups(halves[0]);
    var rest = halves.length === 2 ? groups(halves[1]) : [];
    if (!head || !rest) return null;
    var written = head.length + rest.length + tailGroups;
    if (halves.length === 2 ? written > 7 : written !== 8) return null;
    var zeros = [];
    if (halves.length === 2) for (var z = 0; z < 8 - written; z++) zeros.push("0");
    var all = head.concat(zeros, rest);
    var out = [];
    for (var i = 0; i < all.length; i++) {
      var g = parseInt(all[i] || "0", 16);
      out.push(g >> 8, g & 255);
    }
    return out.concat(tail);
  }

  /** Bytes of a strictly written address (4 or 16), or null. */
  function addressBytes(text) {
    if (typeof text !== "string") return null;
    if (ipv4Bytes(text)) return ipv4Bytes(text);
    if (text.indexOf(":") >= 0) return ipv6Bytes(text);
    return null;
  }

  /**
   * Why a prefix is refused: null when it is fine, else { reason: "syntax" | "length" | "host-bits" }
   * as PrefixSyntaxError.reason says at run time. opts.allowBareAddress: "192.0.2.1" means /32.
   */
  function prefixProblem(text, opts) {
    if (typeof text !== "string") return { reason: "syntax" };
    var slash = text.indexOf("/");
    if (slash < 0 && !(opts && opts.allowBareAddress)) return { reason: "syntax" };
    var bytes = addressBytes(slash < 0 ? text : text.slice(0, slash));
    if (!bytes) return { reason: "syntax" };
    var max = bytes.length * 8;
    var length = max;
    if (slash >= 0) {
      var lengthText = text.slice(slash + 1);
      if (!LENGTH.test(lengthText)) return { reason: "syntax" };
      length = Number(lengthText);
      if (length > max) return { reason: "length", max: max };
    }
    for (var i = 0; i < bytes.length; i++) {
      var keep = Math.max(0, Math.min(8, length - i * 8));
      if ((bytes[i] & ~((0xff << (8 - keep)) & 0xff) & 0xff) !== 0) return { reason: "host-bits" };
    }
    return null;
  }

  var SPECIAL_V4 = [
    [[0, 0, 0, 0], 8, "unspecified"],
    [[127, 0, 0, 0], 8, "loopback"],
    [[224, 0, 0, 0], 4, "multicast"],
    [[255, 255, 255, 255], 32, "broadcast"],
  ];
  var SPECIAL_V6 = [
    [[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 128, "unspecified"],
    [[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 128, "loopback"],
    [[0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8, "multicast"],
  ];
  var MAPPED = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0];

  /** True when the first `bits` bits of a and b agree. */
  function sameBits(a, b, bits) {
    for (var i = 0; bits > 0; i++, bits -= 8) {
      var mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
      if ((a[i] & mask) !== (b[i] & mask)) return false;
    }
    return true;
  }

  function kindOf(bytes, length) {
    var table = bytes.length === 4 ? SPECIAL_V4 : SPECIAL_V6;
    for (var i = 0; i < table.length; i++) {
      if (sameBits(bytes, table[i][0], Math.min(length, table[i][1]))) return table[i][2];
    }
    if (bytes.length === 16 && length >= 96 && sameBits(bytes, MAPPED, 96)) return kindOf(bytes.slice(12), length - 96);
    if (bytes.length === 16 && length < 96 && sameBits(bytes, MAPPED, length)) return "unspecified";
    return null;
  }

  /**
   * The special-purpose block a valid prefix overlaps ("unspecified", "loopback", "multicast",
   * "broadcast"), as nonSourceKind says at run time; null when none (or when it is not a prefix).
   * Neither a target nor a source may be one of these.
   */
  function specialKind(text, opts) {
    if (prefixProblem(text, opts) !== null) return null;
    var slash = text.indexOf("/");
    var bytes = addressBytes(slash < 0 ? text : text.slice(0, slash));
    return kindOf(bytes, slash < 0 ? bytes.length * 8 : Number(text.slice(slash + 1)));
  }

  root.DotsEditorRules = {
    specialKind: specialKind,
    isAddress: function (text) {
      return addressBytes(text) !== null;
    },
    isIpv6: function (text) {
      var b = addressBytes(text);
      return b !== null && b.length === 16;
    },
    prefixProblem: prefixProblem,
    isPrefix: function (text, opts) {
      return prefixProblem(text, opts) === null;
    },
  };
})(typeof window !== "undefined" ? window : globalThis);
