// A libsignal device driven by tests/libs/crypto/test_libsignal.py: one JSON request per stdin line, one JSON
// answer per stdout line ({"ok": ...} or {"error": "..."}). Bytes travel as hex. State (the identity key and
// the in-memory stores) lives for the life of the process, as a test's peer device.
'use strict';

const readline = require('node:readline');
const S = require('@signalapp/libsignal-client');

const hex = (bytes) => Buffer.from(bytes).toString('hex');
const bytes = (text) => new Uint8Array(Buffer.from(text, 'hex'));

const identity = S.IdentityKeyPair.generate();
const registrationId = 4242;
const localAddress = S.ProtocolAddress.new('libsignal', 1);

class Sessions extends S.SessionStore {
  constructor() {
    super();
    this.records = new Map();
  }
  async saveSession(address, record) {
    // Serialized as an app's store would keep it, so the record format is exercised too.
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

class Identities extends S.IdentityKeyStore {
  constructor() {
    super();
    this.known = new Map();
  }
  async getIdentityKey() {
    return identity.privateKey;
  }
  async getLocalRegistrationId() {
    return registrationId;
  }
  async saveIdentity(address, key) {
    this.known.set(address.toString(), key.serialize());
    return S.IdentityChange.NewOrUnchanged;
  }
  async isTrustedIdentity() {
    return true;
  }
  async getIdentity(address) {
    const stored = this.known.get(address.toString());
    return stored ? S.PublicKey.deserialize(stored) : null;
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

const sessions = new Sessions();
const senderKeys = new SenderKeys();
const identities = new Identities();

const handlers = {
  identity: () => ({ identity_key: hex(identity.publicKey.serialize()) }),

  // A signed Kyber1024 prekey as libsignal generates it: public and secret key with their type bytes.
  kyber_prekey: () => {
    const pair = S.KEMKeyPair.generate();
    const publicKey = pair.getPublicKey().serialize();
    return {
      public_key: hex(publicKey),
      secret_key: hex(pair.getSecretKey().serialize()),
      signature: hex(identity.privateKey.sign(publicKey)),
    };
  },

  // Whether libsignal accepts a serialized KEM public key (it throws on a type or size it refuses).
  kem_public_key: ({ key }) => hex(S.KEMPublicKey.deserialize(bytes(key)).serialize()),

  verify: ({ identity_key, message, signature }) =>
    S.PublicKey.deserialize(bytes(identity_key)).verify(bytes(message), bytes(signature)),

  // Sender keys: libsignal's own chain (as localAddress), and the chains of senders it heard from.
  sender_key_distribution: async ({ distribution_id }) => {
    const message = await S.SenderKeyDistributionMessage.create(localAddress, distribution_id, senderKeys);
    return hex(message.serialize());
  },
  group_encrypt: async ({ distribution_id, plaintext }) =>
    hex((await S.groupEncrypt(localAddress, distribution_id, senderKeys, bytes(plaintext))).serialize()),
  process_distribution: async ({ name, message }) => {
    const sender = S.ProtocolAddress.new(name, 1);
    await S.processSenderKeyDistributionMessage(sender, S.SenderKeyDistributionMessage.deserialize(bytes(message)), senderKeys);
    return null;
  },
  group_decrypt: async ({ name, message }) =>
    hex(await S.groupDecrypt(S.ProtocolAddress.new(name, 1), senderKeys, bytes(message))),

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

  // Processes our bundle (PQXDH: libsignal encapsulates to our Kyber prekey) and encrypts a first message.
  start_session: async (request) => {
    const address = S.ProtocolAddress.new(request.name, request.device_id);
    const bundle = S.PreKeyBundle.new(
      request.registration_id,
      request.device_id,
      request.prekey_id ?? null,
      request.prekey ? S.PublicKey.deserialize(bytes(request.prekey)) : null,
      request.signed_prekey_id,
      S.PublicKey.deserialize(bytes(request.signed_prekey)),
      bytes(request.signed_prekey_signature),
      S.PublicKey.deserialize(bytes(request.identity_key)),
      request.kyber_prekey_id,
      S.KEMPublicKey.deserialize(bytes(request.kyber_prekey)),
      bytes(request.kyber_prekey_signature),
    );
    await S.processPreKeyBundle(bundle, address, localAddress, sessions, identities);
    const message = await S.signalEncrypt(bytes(request.plaintext), address, localAddress, sessions, identities);
    return { type: message.type(), body: hex(message.serialize()) };
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
      answer = { ok: await handlers[request.op](request) };
    } catch (error) {
      answer = { error: String(error && error.message ? error.message : error) };
    }
    process.stdout.write(JSON.stringify(answer) + '\n');
  });
});
