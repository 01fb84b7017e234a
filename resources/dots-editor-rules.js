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

  root.DotsEditorRules = {
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
