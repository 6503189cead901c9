// KafkaJS side of scripts/compat/test_kafkajs.py.
// Reads one JSON request on stdin, writes one JSON result on stdout; logs go to stderr.
// Keys, values and header values travel base64-encoded.
//   {"mode":"produce","bootstrap":"h:p","topic":t,"codec":"lz4","acks":-1,
//    "messages":[{"partition":0,"key":b64,"value":b64,"headers":[[name,b64],...]}]}
//     -> {"produced": n}
//   {"mode":"consume","bootstrap":"h:p","topic":t,"group":g,"counts":{"0":n0,...},"timeout_ms":ms}
//     -> {"records":[{"partition":p,"offset":o,"key":b64,"value":b64,"headers":[[name,b64],...]}]}
const { Kafka, logLevel } = require('kafkajs')
const { compressionType } = require('./codecs')

const b64 = buf => (buf === null || buf === undefined ? null : Buffer.from(buf).toString('base64'))
const unb64 = s => (s === null ? null : Buffer.from(s, 'base64'))

const logCreator = () => ({ namespace, level, label, log }) =>
  process.stderr.write(`[kafkajs ${label}] ${namespace}: ${log.message} ${JSON.stringify(log)}\n`)

// KafkaJS takes headers as an object; a repeated name becomes an array (written in order).
function headersToObject(pairs) {
  const out = {}
  for (const [name, value] of pairs) {
    const v = unb64(value)
    if (!(name in out)) out[name] = v
    else out[name] = [].concat(out[name], v)
  }
  return out
}

function headersFromObject(obj) {
  const pairs = []
  for (const [name, value] of Object.entries(obj || {})) {
    for (const v of [].concat(value)) pairs.push([name, b64(v)])
  }
  return pairs
}

async function produce(kafka, req) {
  const producer = kafka.producer({ allowAutoTopicCreation: false, idempotent: false })
  await producer.connect()
  const compression = compressionType(req.codec)
  const CHUNK = 50 // several sends, so each partition gets several batches
  try {
    for (let i = 0; i < req.messages.length; i += CHUNK) {
      await producer.send({
        topic: req.topic,
        acks: req.acks,
        compression,
        messages: req.messages.slice(i, i + CHUNK).map(m => ({
          partition: m.partition,
          key: unb64(m.key),
          value: unb64(m.value),
          headers: headersToObject(m.headers),
        })),
      })
    }
  } finally {
    await producer.disconnect()
  }
  return { produced: req.messages.length }
}

async function consume(kafka, req) {
  const remaining = new Map(Object.entries(req.counts).map(([p, n]) => [Number(p), n]))
  const records = []
  const consumer = kafka.consumer({ groupId: req.group, retry: { retries: 2 } })
  await consumer.connect()
  try {
    await consumer.subscribe({ topic: req.topic, fromBeginning: true })
    await new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`timed out after ${req.timeout_ms} ms; still missing ${JSON.stringify([...remaining])}`)),
        req.timeout_ms)
      consumer.on(consumer.events.CRASH, e => { clearTimeout(timer); reject(e.payload.error) })
      consumer.run({
        autoCommit: false,
        eachMessage: async ({ partition, message }) => {
          records.push({
            partition,
            offset: Number(message.offset),
            key: b64(message.key),
            value: b64(message.value),
            headers: headersFromObject(message.headers),
          })
          remaining.set(partition, (remaining.get(partition) || 0) - 1)
          if ([...remaining.values()].every(n => n <= 0)) { clearTimeout(timer); resolve() }
        },
      }).catch(e => { clearTimeout(timer); reject(e) })
    })
  } finally {
    await consumer.disconnect()
  }
  return { records }
}

async function main() {
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  const req = JSON.parse(Buffer.concat(chunks).toString('utf8'))
  const kafka = new Kafka({
    clientId: 'corelog-compat',
    brokers: [req.bootstrap],
    logLevel: logLevel.WARN,
    logCreator,
    retry: { retries: 3 },
  })
  const modes = { produce, consume }
  if (!modes[req.mode]) throw new Error(`unknown mode ${req.mode}`)
  const out = JSON.stringify(await modes[req.mode](kafka, req)) + '\n'
  // exit only once a piped stdout has taken all of it (process.exit would cut it short)
  await new Promise(resolve => process.stdout.write(out, resolve))
}

main().then(() => process.exit(0), e => {
  process.stderr.write(`kafkajs_client failed: ${e && e.stack || e}\n`)
  process.exit(1)
})
