"use strict";
// node-dtls-client uses node:crypto for CCM/GCM on Node >= 10 and never loads this module.
throw new Error("node-aead-crypto is not available: node-dtls-client uses node:crypto on Node >= 10");
