// The RFC 9066 call-home mitigation request of the digest's section 7 (IPv4 behind CGN), as the
// JSON view our codec takes and as the integer-keyed Maps raw cbor-x takes, with its known bytes.

export const CALL_HOME_REQUEST_HEX =
  "a101a10281a506816f3139382e35312e3130302e372f3332198000816e3230332e302e3131332e302f333219800181a208199c4009199c4a0a81060e190e10";

export const callHomeRequest = {
  "ietf-dots-signal-channel:mitigation-scope": {
    scope: [
      {
        "target-prefix": ["198.51.100.7/32"],
        "ietf-dots-call-home:source-prefix": ["203.0.113.0/32"],
        "ietf-dots-call-home:source-port-range": [{ "lower-port": 40000, "upper-port": 40010 }],
        "target-protocol": [6],
        lifetime: 3600,
      },
    ],
  },
};

/** The same message as nested Maps with the CBOR keys (1 mitigation-scope, 2 scope, ...). */
export const callHomeRequestMap = new Map<number, unknown>([
  [
    1,
    new Map<number, unknown>([
      [
        2,
        [
          new Map<number, unknown>([
            [6, ["198.51.100.7/32"]],
            [32768, ["203.0.113.0/32"]],
            [
              32769,
              [
                new Map([
                  [8, 40000],
                  [9, 40010],
                ]),
              ],
            ],
            [10, [6]],
            [14, 3600],
          ]),
        ],
      ],
    ]),
  ],
]);
