// libsignal devices driven by the Python tests (tests/libs/crypto/libsignal_peer.py) and bench/crypto.py: one
// JSON request per stdin line, one JSON answer per stdout line ({"ok": ...} or {"error": "..."}). Bytes travel
// as hex. The process is long-lived and holds any number of devices, each with its own identity and in-memory
// stores that keep every record serialized, as an app's database would, so each message goes through
// libsignal's record formats too.
'use strict';

const readline = require('node:readline');
const S = require('@signalapp/libsignal-client');

const hex = (bytes) => Buffer.from(bytes).toString('hex');
const bytes = (text) => new Uint8Array(Buffer.from(text, 'hex'));

class Sessions extends S.SessionStore {
  constructor() {
    super();
    this.records = new Map();
  }
  async saveSession(address, record) {
    this.records.set(address.toString(), record.serialize());
  }
  async getSession(address) {
    const stored = this.records.get(address.toString());
    return stored ? S.SessionRecord.deserialize(stored) : null;
  }
  async getExistingSessions(addresses) {
    return Promise.all(addresses.map((address) => this.getSession(address)));
  }
}

// Trust on first use, as Parley's InMemoryProtocolStore: an unknown identity is trusted, a changed one is not.
class Identities extends S.IdentityKeyStore {
  constructor(identity, registrationId) {
    super();
    this.identity = identity;
    this.registrationId = registrationId;
    this.known = new Map();
  }
  async getIdentityKey() {
    return this.identity.privateKey;
  }
  async getLocalRegistrationId() {
    return this.registrationId;
  }
  async saveIdentity(address, key) {
    const previous = this.known.get(address.toString());
    this.known.set(address.toString(), hex(key.serialize()));
    return previous !== undefined && previous !== hex(key.serialize())
      ? S.IdentityChange.ReplacedExisting
      : S.IdentityChange.NewOrUnchanged;
  }
  async isTrustedIdentity(address, key) {
    const known = this.known.get(address.toString());
    return known === undefined || known === hex(key.serialize());
  }
  async getIdentity(address) {
    const stored = this.known.get(address.toString());
    return stored ? S.PublicKey.deserialize(bytes(stored)) : null;
  }
}

class PreKeys extends S.PreKeyStore {
  constructor() {
    super();
    this.records = new Map();
  }
  async savePreKey(id, record) {
    this.records.set(id, record.serialize());
  }
  async getPreKey(id) {
    const stored = this.records.get(id);
    if (!stored) throw new Error(`no prekey ${id}`);
    return S.PreKeyRecord.deserialize(stored);
  }
  async removePreKey(id) {
    this.records.delete(id);
  }
}

class SignedPreKeys extends S.SignedPreKeyStore {
  constructor() {
    super();
    this.records = new Map();
  }
  async saveSignedPreKey(id, record) {
    this.records.set(id, record.serialize());
  }
  async getSignedPreKey(id) {
    const stored = this.records.get(id);
    if (!stored) throw new Error(`no signed prekey ${id}`);
    return S.SignedPreKeyRecord.deserialize(stored);
  }
}

// One-time Kyber prekeys are deleted once used; a last-resort one stays, and (as Signal's apps do) refuses a
// second use with the same signed prekey and base key, which would be a replayed session start.
class KyberPreKeys extends S.KyberPreKeyStore {
  constructor() {
    super();
    this.records = new Map();
    this.lastResort = new Set();
    this.lastResortUses = new Set();
  }
  async saveKyberPreKey(id, record) {
    this.records.set(id, record.serialize());
  }
  async getKyberPreKey(id) {
    const stored = this.records.get(id);
    if (!stored) throw new Error(`no kyber prekey ${id}`);
    return S.KyberPreKeyRecord.deserialize(stored);
  }
  async markKyberPreKeyUsed(id, signedPreKeyId, baseKey) {
    if (!this.lastResort.has(id)) {
      this.records.delete(id);
      return;
    }
    const use = `${id}/${signedPreKeyId}/${hex(baseKey.serialize())}`;
    if (this.lastResortUses.has(use)) throw new Error(`last-resort kyber prekey ${id} reused`);
    this.lastResortUses.add(use);
  }
}

class SenderKeys extends S.SenderKeyStore {
  constructor() {
    super();
    this.records = new Map();
  }
  async saveSenderKey(sender, distributionId, record) {
    this.records.set(`${sender.toString()}/${distributionId}`, record.serialize());
  }
  async getSenderKey(sender, distributionId) {
    const stored = this.records.get(`${sender.toString()}/${distributionId}`);
    return stored ? S.SenderKeyRecord.deserialize(stored) : null;
  }
}

const SIGNED_PREKEY_ID = 1;
const LAST_RESORT_KYBER_ID = 0xfffff;

// One libsignal device: an address, an identity, a signed prekey, and its stores.
class Device {
  constructor(name, deviceId, registrationId) {
    this.address = S.ProtocolAddress.new(name, deviceId);
    this.identity = S.IdentityKeyPair.generate();
    this.registrationId = registrationId;
    this.sessions = new Sessions();
    this.identities = new Identities(this.identity, registrationId);
    this.preKeys = new PreKeys();
    this.signedPreKeys = new SignedPreKeys();
    this.kyberPreKeys = new KyberPreKeys();
    this.senderKeys = new SenderKeys();
    this.nextPreKeyId = 1;
    this.nextKyberId = 1;
    const signed = S.PrivateKey.generate();
    this.signedPreKey = S.SignedPreKeyRecord.new(
      SIGNED_PREKEY_ID,
      Date.now(),
      signed.getPublicKey(),
      signed,
      this.identity.privateKey.sign(signed.getPublicKey().serialize()),
    );
  }

  async init() {
    await this.signedPreKeys.saveSignedPreKey(SIGNED_PREKEY_ID, this.signedPreKey);
    return this;
  }

  async kyberPreKey(id) {
    const pair = S.KEMKeyPair.generate();
    const signature = this.identity.privateKey.sign(pair.getPublicKey().serialize());
    const record = S.KyberPreKeyRecord.new(id, Date.now(), pair, signature);
    await this.kyberPreKeys.saveKyberPreKey(id, record);
    return record;
  }

  // Publishes what a key directory hands out: the signed prekey, a fresh one-time EC prekey (if asked), and a
  // fresh one-time Kyber prekey or the last-resort one (made on first use).
  async bundle({ oneTimePrekey = true, kyber = 'one_time' } = {}) {
    let preKey = null;
    if (oneTimePrekey) {
      const priv = S.PrivateKey.generate();
      preKey = S.PreKeyRecord.new(this.nextPreKeyId++, priv.getPublicKey(), priv);
      await this.preKeys.savePreKey(preKey.id(), preKey);
    }
    let kyberRecord;
    if (kyber === 'last_resort') {
      if (!this.kyberPreKeys.lastResort.has(LAST_RESORT_KYBER_ID)) {
        this.kyberPreKeys.lastResort.add(LAST_RESORT_KYBER_ID);
        await this.kyberPreKey(LAST_RESORT_KYBER_ID);
      }
      kyberRecord = await this.kyberPreKeys.getKyberPreKey(LAST_RESORT_KYBER_ID);
    } else {
      kyberRecord = await this.kyberPreKey(this.nextKyberId++);
    }
    return S.PreKeyBundle.new(
      this.registrationId,
      this.address.deviceId(),
      preKey ? preKey.id() : null,
      preKey ? preKey.publicKey() : null,
      this.signedPreKey.id(),
      this.signedPreKey.publicKey(),
      this.signedPreKey.signature(),
      this.identity.publicKey,
      kyberRecord.id(),
      kyberRecord.publicKey(),
      kyberRecord.signature(),
    );
  }

  // The keys an app uploads to its server: the signed prekey, `oneTime` fresh one-time EC prekeys, `oneTimeKyber`
  // fresh signed one-time Kyber prekeys and, with `lastResortKyber`, the last-resort Kyber prekey (made on first
  // use). The private halves stay in this device's stores.
  async uploadKeys({ oneTime = 0, oneTimeKyber = 0, lastResortKyber = false } = {}) {
    const preKeys = [];
    for (let i = 0; i < oneTime; i += 1) {
      const priv = S.PrivateKey.generate();
      const record = S.PreKeyRecord.new(this.nextPreKeyId++, priv.getPublicKey(), priv);
      await this.preKeys.savePreKey(record.id(), record);
      preKeys.push(record);
    }
    const kyberPreKeys = [];
    for (let i = 0; i < oneTimeKyber; i += 1) kyberPreKeys.push(await this.kyberPreKey(this.nextKyberId++));
    let lastResort = null;
    if (lastResortKyber) {
      if (!this.kyberPreKeys.lastResort.has(LAST_RESORT_KYBER_ID)) {
        this.kyberPreKeys.lastResort.add(LAST_RESORT_KYBER_ID);
        await this.kyberPreKey(LAST_RESORT_KYBER_ID);
      }
      lastResort = await this.kyberPreKeys.getKyberPreKey(LAST_RESORT_KYBER_ID);
    }
    return { preKeys, kyberPreKeys, lastResort };
  }

  async encrypt(remote, plaintext) {
    return S.signalEncrypt(plaintext, remote, this.address, this.sessions, this.identities);
  }

  async decrypt(remote, type, body) {
    if (type === S.CiphertextMessageType.PreKey) {
      return S.signalDecryptPreKey(
        S.PreKeySignalMessage.deserialize(body),
        remote,
        this.address,
        this.sessions,
        this.identities,
        this.preKeys,
        this.signedPreKeys,
        this.kyberPreKeys,
      );
    }
    if (type === S.CiphertextMessageType.Whisper) {
      return S.signalDecrypt(S.SignalMessage.deserialize(body), remote, this.address, this.sessions, this.identities);
    }
    throw new Error(`not a 1:1 message type: ${type}`);
  }
}

const devices = new Map();
const device = (name) => {
  const found = devices.get(name);
  if (!found) throw new Error(`no device ${name}`);
  return found;
};
const remoteAddress = ({ remote, remote_device_id: deviceId }) => S.ProtocolAddress.new(remote, deviceId ?? 1);

const bundleJson = (bundle) => ({
  registration_id: bundle.registrationId(),
  device_id: bundle.deviceId(),
  prekey_id: bundle.preKeyId(),
  prekey: bundle.preKeyPublic() ? hex(bundle.preKeyPublic().serialize()) : null,
  signed_prekey_id: bundle.signedPreKeyId(),
  signed_prekey: hex(bundle.signedPreKeyPublic().serialize()),
  signed_prekey_signature: hex(bundle.signedPreKeySignature()),
  identity_key: hex(bundle.identityKey().serialize()),
  kyber_prekey_id: bundle.kyberPreKeyId(),
  kyber_prekey: hex(bundle.kyberPreKeyPublic().serialize()),
  kyber_prekey_signature: hex(bundle.kyberPreKeySignature()),
});

const bundleFromJson = (json) =>
  S.PreKeyBundle.new(
    json.registration_id,
    json.device_id,
    json.prekey_id ?? null,
    json.prekey ? S.PublicKey.deserialize(bytes(json.prekey)) : null,
    json.signed_prekey_id,
    S.PublicKey.deserialize(bytes(json.signed_prekey)),
    bytes(json.signed_prekey_signature),
    S.PublicKey.deserialize(bytes(json.identity_key)),
    json.kyber_prekey_id,
    S.KEMPublicKey.deserialize(bytes(json.kyber_prekey)),
    bytes(json.kyber_prekey_signature),
  );

// The benchmark's two devices in this process, measured for about `seconds` on libsignal alone (no JSON in the
// loop): `count` operations in `elapsed` seconds.
async function measure(seconds, operation) {
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(Math.round(seconds * 1e9));
  let count = 0;
  let now;
  do {
    await operation();
    count += 1;
    now = process.hrtime.bigint();
  } while (now < deadline);
  return { count, elapsed: Number(now - start) / 1e9 };
}

const benchPlaintext = new Uint8Array(100).fill(7);

const handlers = {
  create_device: async ({ name, device_id: deviceId, registration_id: registrationId }) => {
    const created = await new Device(name, deviceId ?? 1, registrationId ?? 4242).init();
    devices.set(name, created);
    return { identity_key: hex(created.identity.publicKey.serialize()), registration_id: created.registrationId };
  },

  // A bundle as the key directory would hand it out: `one_time_prekey` (bool), `kyber` "one_time" or "last_resort".
  bundle: async ({ device: name, one_time_prekey: oneTimePrekey, kyber }) =>
    bundleJson(await device(name).bundle({ oneTimePrekey, kyber })),

  // What an app uploads to its server (see Device.uploadKeys): identity key, registration id, the signed prekey,
  // `one_time_prekeys` one-time EC prekeys, `one_time_kyber_prekeys` one-time Kyber prekeys, and the last-resort
  // Kyber prekey when `last_resort_kyber`.
  upload_keys: async ({
    device: name,
    one_time_prekeys: oneTime,
    one_time_kyber_prekeys: oneTimeKyber,
    last_resort_kyber: lastResortKyber,
  }) => {
    const me = device(name);
    const { preKeys, kyberPreKeys, lastResort } = await me.uploadKeys({ oneTime, oneTimeKyber, lastResortKyber });
    const signedJson = (record) => ({
      id: record.id(),
      public_key: hex(record.publicKey().serialize()),
      signature: hex(record.signature()),
    });
    return {
      identity_key: hex(me.identity.publicKey.serialize()),
      registration_id: me.registrationId,
      signed_prekey: signedJson(me.signedPreKey),
      one_time_prekeys: preKeys.map((record) => ({ id: record.id(), public_key: hex(record.publicKey().serialize()) })),
      one_time_kyber_prekeys: kyberPreKeys.map(signedJson),
      last_resort_kyber_prekey: lastResort ? signedJson(lastResort) : null,
    };
  },

  // The ids of the prekeys the device still holds: one-time EC prekeys and Kyber prekeys (the last-resort one
  // included), to see which ones libsignal consumed.
  stored_prekey_ids: ({ device: name }) => {
    const me = device(name);
    return { prekeys: [...me.preKeys.records.keys()], kyber_prekeys: [...me.kyberPreKeys.records.keys()] };
  },

  process_bundle: async (request) => {
    const me = device(request.device);
    await S.processPreKeyBundle(bundleFromJson(request.bundle), remoteAddress(request), me.address, me.sessions, me.identities);
    return null;
  },

  // Encrypts each plaintext in turn: [{type, body}].
  encrypt: async (request) => {
    const me = device(request.device);
    const remote = remoteAddress(request);
    const out = [];
    for (const plaintext of request.plaintexts) {
      const message = await me.encrypt(remote, bytes(plaintext));
      out.push({ type: message.type(), body: hex(message.serialize()) });
    }
    return out;
  },

  // Decrypts each message in turn, going on after a failure: [{plaintext} or {error}].
  decrypt: async (request) => {
    const me = device(request.device);
    const remote = remoteAddress(request);
    const out = [];
    for (const { type, body } of request.messages) {
      try {
        out.push({ plaintext: hex(await me.decrypt(remote, type, bytes(body))) });
      } catch (error) {
        out.push({ error: String(error && error.message ? error.message : error) });
      }
    }
    return out;
  },

  // The stored (serialized) session record, for the tests to read libsignal's SPQR state from.
  session_record: async (request) => {
    const stored = device(request.device).sessions.records.get(remoteAddress(request).toString());
    return stored ? hex(stored) : null;
  },

  // A signed Kyber1024 prekey as libsignal generates it: public and secret key with their type bytes.
  kyber_prekey: ({ device: name }) => {
    const me = device(name);
    const pair = S.KEMKeyPair.generate();
    const publicKey = pair.getPublicKey().serialize();
    return {
      public_key: hex(publicKey),
      secret_key: hex(pair.getSecretKey().serialize()),
      signature: hex(me.identity.privateKey.sign(publicKey)),
    };
  },

  // Whether libsignal accepts a serialized KEM public key (it throws on a type or size it refuses).
  kem_public_key: ({ key }) => hex(S.KEMPublicKey.deserialize(bytes(key)).serialize()),

  verify: ({ identity_key, message, signature }) =>
    S.PublicKey.deserialize(bytes(identity_key)).verify(bytes(message), bytes(signature)),

  // Sender keys: the device's own chain, and the chains of senders it heard from.
  sender_key_distribution: async ({ device: name, distribution_id }) => {
    const me = device(name);
    const message = await S.SenderKeyDistributionMessage.create(me.address, distribution_id, me.senderKeys);
    return hex(message.serialize());
  },
  group_encrypt: async ({ device: name, distribution_id, plaintext }) => {
    const me = device(name);
    return hex((await S.groupEncrypt(me.address, distribution_id, me.senderKeys, bytes(plaintext))).serialize());
  },
  process_distribution: async (request) => {
    const message = S.SenderKeyDistributionMessage.deserialize(bytes(request.message));
    await S.processSenderKeyDistributionMessage(remoteAddress(request), message, device(request.device).senderKeys);
    return null;
  },
  group_decrypt: async (request) =>
    hex(await S.groupDecrypt(remoteAddress(request), device(request.device).senderKeys, bytes(request.message))),

  fingerprint: ({ version, local_id, local_key, remote_id, remote_key }) => {
    const fingerprint = S.Fingerprint.new(
      5200,
      version,
      bytes(local_id),
      S.PublicKey.deserialize(bytes(local_key)),
      bytes(remote_id),
      S.PublicKey.deserialize(bytes(remote_key)),
    );
    return {
      display: fingerprint.displayableFingerprint().toString(),
      scannable: hex(fingerprint.scannableFingerprint().toBuffer()),
    };
  },

  // PQXDH session setup between two fresh libsignal devices, bundle generation included: the recipient makes a
  // one-time EC prekey and a one-time Kyber prekey (signing it), the initiator processes the bundle and
  // encrypts, the recipient decrypts the prekey message. Sessions are dropped before each setup.
  bench_setup: async ({ seconds }) => {
    const alice = await new Device('11111111-1111-4111-8111-111111111111', 1, 1).init();
    const bob = await new Device('22222222-2222-4222-8222-222222222222', 1, 2).init();
    return measure(seconds, async () => {
      alice.sessions.records.clear();
      bob.sessions.records.clear();
      await S.processPreKeyBundle(await bob.bundle(), bob.address, alice.address, alice.sessions, alice.identities);
      const message = await alice.encrypt(bob.address, benchPlaintext);
      await bob.decrypt(alice.address, message.type(), message.serialize());
    });
  },

  // One-direction round trips on an established session (SPQR running): the initiator encrypts 100 bytes, the
  // recipient decrypts, every time.
  bench_round_trip: async ({ seconds }) => {
    const alice = await new Device('33333333-3333-4333-8333-333333333333', 1, 3).init();
    const bob = await new Device('44444444-4444-4444-8444-444444444444', 1, 4).init();
    await S.processPreKeyBundle(await bob.bundle(), bob.address, alice.address, alice.sessions, alice.identities);
    const first = await alice.encrypt(bob.address, benchPlaintext);
    await bob.decrypt(alice.address, first.type(), first.serialize());
    const reply = await bob.encrypt(alice.address, benchPlaintext);
    await alice.decrypt(bob.address, reply.type(), reply.serialize());
    return measure(seconds, async () => {
      const message = await alice.encrypt(bob.address, benchPlaintext);
      await bob.decrypt(alice.address, message.type(), message.serialize());
    });
  },
};

const lines = readline.createInterface({ input: process.stdin });
// One request at a time, answered in order, even when a handler awaits a store.
let queue = Promise.resolve();
lines.on('line', (line) => {
  queue = queue.then(async () => {
    const request = JSON.parse(line);
    let answer;
    try {
      const handler = handlers[request.op];
      if (!handler) throw new Error(`unknown op ${request.op}`);
      answer = { ok: await handler(request) };
    } catch (error) {
      answer = { error: String(error && error.message ? error.message : error) };
    }
    process.stdout.write(JSON.stringify(answer) + '\n');
  });
});
