// Example Poplar message filter in JavaScript (world `filter-plugin`).
//
// Behaviour (identical in the Python, JavaScript and C examples):
//
// * `validate()` checks the config key `tag` (default "js"): 1 to 64
//   visible ASCII characters, since it ends up in a header field.
// * `classify(env, msg)` looks at the headers and at most the first 4096
//   octets of the body (which starts at `msg.bodyOffset()`), then decides,
//   first match wins:
//     - Subject contains "[SPAM]" (any case)       -> file-into("Junk")
//     - envelope mail-from is blocked@example.org  -> reject(...)
//     - body prefix contains the word DISCARD-ME   -> discard
//     - otherwise                                  -> accept
//   and always adds `X-Poplar-Filter: <tag>` and
//   `X-Poplar-Body-Prefix-Octets: <n>` (body octets examined).
// * One info line is logged per message.
// * `classify` returns a `result`: returning the verdict is `ok`; throwing a
//   string tells the host the filter cannot decide (it then applies the
//   chain entry's `on_failure`). These examples always decide.
//
// Mapping of the WIT types to JavaScript (componentize-js / jco):
// u64 is a BigInt (`msg.read(offset, len)` takes a BigInt offset and a
// Number length, `msg.size()` returns a BigInt), list<u8> is a Uint8Array,
// records use camelCase fields (`env.mailFrom`, `addHeaders`), variants are
// `{ tag: 'file-into', val: 'Junk' }`, enums are strings ('info'), and a
// `result<T, string>` export returns T for ok and throws the string for err.
//
// Build with ./build.sh (npm ci && npm run build); it writes filter.wasm.

import { log, config } from 'poplar:plugin/host@0.2.0';

const LANGUAGE = 'js';
const BODY_PREFIX_MAX = 4096;
const BLOCKED_SENDER = 'blocked@example.org';
const SPAM_MARK = '[spam]';
const DISCARD_WORD = new TextEncoder().encode('DISCARD-ME');

// Returns [tag, error]; on a bad value the tag is the default.
function readTag() {
  for (const [key, value] of config()) {
    if (key !== 'tag') continue;
    const ok = value.length >= 1 && value.length <= 64 && /^[\x21-\x7e]*$/.test(value);
    if (!ok) {
      return [
        LANGUAGE,
        `config key \`tag\` must be 1 to 64 visible ASCII characters (no spaces), got "${value}"`,
      ];
    }
    return [value, null];
  }
  return [LANGUAGE, null];
}

// At most BODY_PREFIX_MAX octets of the body. The host found where it
// starts (just past the empty line after the header block; the size when
// there is none), so the header block is never read here.
function bodyPrefix(msg) {
  const start = msg.bodyOffset();
  const prefix = new Uint8Array(BODY_PREFIX_MAX);
  let len = 0;
  while (len < BODY_PREFIX_MAX) {
    const chunk = msg.read(start + BigInt(len), BODY_PREFIX_MAX - len);
    if (chunk.length === 0) break;
    prefix.set(chunk.subarray(0, BODY_PREFIX_MAX - len), len);
    len += Math.min(chunk.length, BODY_PREFIX_MAX - len);
  }
  return prefix.subarray(0, len);
}

function isWordByte(b) {
  return (
    (b >= 48 && b <= 57) || (b >= 65 && b <= 90) || (b >= 97 && b <= 122) || b === 0x5f || b === 0x2d
  );
}

// True if `word` occurs with no letter, digit, '_' or '-' either side.
function containsWord(hay, word) {
  outer: for (let i = hay.indexOf(word[0]); i >= 0 && i + word.length <= hay.length; i = hay.indexOf(word[0], i + 1)) {
    for (let j = 1; j < word.length; j++) {
      if (hay[i + j] !== word[j]) continue outer;
    }
    const end = i + word.length;
    const beforeOk = i === 0 || !isWordByte(hay[i - 1]);
    const afterOk = end === hay.length || !isWordByte(hay[end]);
    if (beforeOk && afterOk) return true;
  }
  return false;
}

function asciiLower(s) {
  return s.replace(/[A-Z]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 32));
}

function actionText(action) {
  switch (action.tag) {
    case 'file-into':
      return `file-into(${action.val})`;
    case 'reject':
      return `reject(${action.val})`;
    default:
      return action.tag;
  }
}

export const filter = {
  validate() {
    const [, error] = readTag();
    if (error !== null) throw error;
  },

  // Returning the verdict is `ok`; `throw 'why'` would be `err`.
  classify(env, msg) {
    const [tag] = readTag();
    const headers = msg.headers();
    const prefix = bodyPrefix(msg);

    let sender = env.mailFrom;
    if (sender.startsWith('<') && sender.endsWith('>')) sender = sender.slice(1, -1);

    let action;
    if (headers.some((h) => asciiLower(h.name) === 'subject' && asciiLower(h.value).includes(SPAM_MARK))) {
      action = { tag: 'file-into', val: 'Junk' };
    } else if (asciiLower(sender) === BLOCKED_SENDER) {
      action = { tag: 'reject', val: `sender blocked by ${tag} filter` };
    } else if (containsWord(prefix, DISCARD_WORD)) {
      action = { tag: 'discard' };
    } else {
      action = { tag: 'accept' };
    }

    log(
      'info',
      `filter=${tag} from=<${sender}> rcpt=<${env.rcptTo}> ` +
        `size=${msg.size()} body-prefix=${prefix.length} action=${actionText(action)}`,
    );
    return {
      action,
      addHeaders: [
        { name: 'X-Poplar-Filter', value: tag },
        { name: 'X-Poplar-Body-Prefix-Octets', value: String(prefix.length) },
      ],
    };
  },
};
