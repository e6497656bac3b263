// A producer and consumer of mlops_async records in Node.js, written from
// docs/wire-format.md alone (kafkajs, ioredis, @msgpack/msgpack).
//
//   node wire.mjs kafka-produce HOST:PORT TOPIC < records.json
//   node wire.mjs kafka-consume HOST:PORT TOPIC COUNT      > records.json
//   node wire.mjs redis-produce REDIS_URL TOPIC < records.json
//   node wire.mjs redis-consume REDIS_URL TOPIC COUNT      > records.json
//
// A record in JSON: {"key": "user-42" | null, "headers": [["name", "value"], ...],
// "message": {...the envelope's fields...}, "partition": n (consume only)}.
// Byte strings inside a message are written in JSON as {"$bin": "<base64>"}.
import { Kafka, logLevel, Partitioners } from "kafkajs";
import Redis from "ioredis";
import { encode, decode } from "@msgpack/msgpack";

// --8<-- [start:envelope]
const MSGPACK_V1 = 0x01; // marker byte: msgpack, envelope v1

function encodeValue(message) {
  // One marker byte, then the envelope: a msgpack map with str keys.
  const body = encode(message);
  const value = Buffer.alloc(1 + body.length);
  value[0] = MSGPACK_V1;
  Buffer.from(body.buffer, body.byteOffset, body.byteLength).copy(value, 1);
  return value;
}

function decodeValue(value) {
  if (value === null || value.length === 0) throw new Error("null or empty value");
  if (value[0] !== MSGPACK_V1) throw new Error(`marker 0x${value[0].toString(16)}`);
  return decode(value.subarray(1)); // bin comes back as Uint8Array
}
// --8<-- [end:envelope]

// --8<-- [start:murmur2]
// Kafka's partitioner for a keyed record (the Java client's, and kafkajs's
// DefaultPartitioner): murmur2 of the key's bytes, positive, modulo the partitions.
function murmur2(data) {
  const m = 0x5bd1e995, r = 24;
  let h = (0x9747b28c ^ data.length) | 0;
  const n = data.length & ~3;
  for (let i = 0; i < n; i += 4) {
    let k = (data[i] & 0xff) | ((data[i + 1] & 0xff) << 8)
          | ((data[i + 2] & 0xff) << 16) | ((data[i + 3] & 0xff) << 24);
    k = Math.imul(k, m); k ^= k >>> r; k = Math.imul(k, m);
    h = Math.imul(h, m) ^ k;
  }
  switch (data.length & 3) {
    case 3: h ^= (data[n + 2] & 0xff) << 16; // falls through
    case 2: h ^= (data[n + 1] & 0xff) << 8;  // falls through
    case 1: h ^= data[n] & 0xff; h = Math.imul(h, m);
  }
  h ^= h >>> 13; h = Math.imul(h, m); h ^= h >>> 15;
  return h;
}

const partitionFor = (key, partitions) => (murmur2(key) & 0x7fffffff) % partitions;
// --8<-- [end:murmur2]

// JSON <-> msgpack values: byte strings travel in JSON as {"$bin": base64}.
const toWire = (v) => {
  if (Array.isArray(v)) return v.map(toWire);
  if (v && typeof v === "object") {
    if (typeof v.$bin === "string") return new Uint8Array(Buffer.from(v.$bin, "base64"));
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toWire(x)]));
  }
  return v;
};
const toJson = (v) => {
  if (v instanceof Uint8Array) return { $bin: Buffer.from(v).toString("base64") };
  if (Array.isArray(v)) return v.map(toJson);
  if (v && typeof v === "object") {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toJson(x)]));
  }
  return v;
};

async function readStdin() {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

function kafka(bootstrap) {
  return new Kafka({ clientId: "node-interop", brokers: [bootstrap], logLevel: logLevel.ERROR });
}

async function kafkaProduce(bootstrap, topic) {
  const records = await readStdin();
  // --8<-- [start:kafka-produce]
  const producer = kafka(bootstrap).producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  await producer.send({
    topic,
    acks: -1,
    messages: records.map((r) => ({
      key: r.key === null ? null : Buffer.from(r.key, "utf8"),
      value: encodeValue(toWire(r.message)),
      headers: Object.fromEntries(r.headers.map(([name, value]) => [name, Buffer.from(value)])),
    })),
  });
  await producer.disconnect();
  // --8<-- [end:kafka-produce]
}

async function kafkaConsume(bootstrap, topic, count) {
  const client = kafka(bootstrap);
  const partitions = (await (async () => {
    const admin = client.admin();
    await admin.connect();
    const meta = await admin.fetchTopicMetadata({ topics: [topic] });
    await admin.disconnect();
    return meta.topics[0].partitions.length;
  })());
  const out = [];
  // --8<-- [start:kafka-consume]
  const consumer = client.consumer({ groupId: `node-${process.pid}-${Date.now()}`,
                                     sessionTimeout: 6000, heartbeatInterval: 500 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await new Promise((resolve) => {
    consumer.run({
      eachMessage: async ({ partition, message }) => {
        out.push({
          key: message.key === null ? null : message.key.toString("utf8"),
          headers: Object.entries(message.headers ?? {}).map(([n, v]) => [n, v.toString("utf8")]),
          message: toJson(decodeValue(message.value)),
          partition,
          murmur2_partition: message.key === null ? null : partitionFor(message.key, partitions),
        });
        if (out.length >= count) resolve();
      },
    });
  });
  await consumer.disconnect();
  // --8<-- [end:kafka-consume]
  return out;
}

async function redisProduce(url, topic) {
  const records = await readStdin();
  // --8<-- [start:redis-produce]
  const redis = new Redis(url);
  for (const r of records) {
    const fields = ["v", encodeValue(toWire(r.message))];
    if (r.key !== null) fields.push("k", Buffer.from(r.key, "utf8"));
    if (r.headers.length > 0) {
      // h: a msgpack array of [name (str), value (bin)] pairs.
      const pairs = r.headers.map(([name, value]) => [name, new Uint8Array(Buffer.from(value))]);
      fields.push("h", Buffer.from(encode(pairs)));
    }
    await redis.xadd(`mlops:${topic}`, "*", ...fields);
  }
  redis.disconnect();
  // --8<-- [end:redis-produce]
}

async function redisConsume(url, topic, count) {
  const out = [];
  // --8<-- [start:redis-consume]
  const redis = new Redis(url);
  let last = "0";
  while (out.length < count) {
    const reply = await redis.xreadBuffer("COUNT", 100, "BLOCK", 1000,
                                          "STREAMS", `mlops:${topic}`, last);
    for (const [, entries] of reply ?? []) {
      for (const [id, flat] of entries) {
        last = id.toString();
        const f = {};
        for (let i = 0; i < flat.length; i += 2) f[flat[i].toString()] = flat[i + 1];
        const headers = f.h ? decode(f.h).map(([n, v]) => [n, Buffer.from(v).toString("utf8")]) : [];
        out.push({ key: f.k ? f.k.toString("utf8") : null, headers,
                   message: toJson(decodeValue(f.v)), id: last });
      }
    }
  }
  redis.disconnect();
  // --8<-- [end:redis-consume]
  return out;
}

const [cmd, where, topic, count] = process.argv.slice(2);
const timer = setTimeout(() => { console.error(`${cmd}: timed out`); process.exit(3); }, 45_000);
try {
  if (cmd === "kafka-produce") await kafkaProduce(where, topic);
  else if (cmd === "redis-produce") await redisProduce(where, topic);
  else if (cmd === "kafka-consume") console.log(JSON.stringify(await kafkaConsume(where, topic, Number(count))));
  else if (cmd === "redis-consume") console.log(JSON.stringify(await redisConsume(where, topic, Number(count))));
  else throw new Error(`unknown command ${cmd}`);
} catch (err) {
  console.error(err);
  process.exit(2);
}
clearTimeout(timer);
