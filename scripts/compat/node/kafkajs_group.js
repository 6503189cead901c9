// KafkaJS group consumer for scripts/compat/test_groups.py (see groups.py for the protocol).
// Usage: node kafkajs_group.js SPEC_JSON
// Subscribes to SPEC.topic in SPEC.group with KafkaJS's usual settings (autoCommit: offsets
// are committed after each batch; fromBeginning when the group has no offset) and writes
// one JSON event a line on stdout:
//   {"ev":"assigned","added":[...],"owned":[...]}, {"ev":"revoked","removed":[...],"owned":[...]},
//   {"ev":"records","recs":[[partition,offset,key],...]}, {"ev":"member","id":...},
//   {"ev":"error","msg":...}, {"ev":"closed"}
// "stop" on stdin (or end of stdin) disconnects (commits, leaves the group) and exits 0.
const { Kafka, logLevel } = require('kafkajs')
require('./codecs') // the producers in the tests use lz4

const spec = JSON.parse(process.argv[2])
let owned = new Set()

const emit = ev => process.stdout.write(JSON.stringify(ev) + '\n')
const sorted = s => [...s].sort((a, b) => a - b)

const logCreator = () => ({ namespace, level, label, log }) =>
  process.stderr.write(`${new Date().toISOString()} [kafkajs ${label}] ${namespace}: ${log.message} ${JSON.stringify(log)}\n`)

const kafka = new Kafka({
  clientId: spec.name,
  brokers: [spec.bootstrap],
  logLevel: logLevel.WARN,
  logCreator,
  retry: { retries: 5 },
})

const consumer = kafka.consumer({
  groupId: spec.group,
  sessionTimeout: spec.session_timeout_ms,
  heartbeatInterval: spec.heartbeat_interval_ms,
  rebalanceTimeout: spec.max_poll_interval_ms,
  // KafkaJS heartbeats from its fetch loop: keep fetch waits well under the session timeout
  maxWaitTimeInMs: 200,
  retry: { retries: 5 },
  ...(spec.config || {}),
})

const { GROUP_JOIN, REBALANCING, CRASH } = consumer.events
consumer.on(GROUP_JOIN, e => {
  // KafkaJS is eager: each join hands out the whole new assignment
  const now = new Set(e.payload.memberAssignment[spec.topic] || [])
  const removed = sorted([...owned].filter(p => !now.has(p)))
  if (removed.length) emit({ ev: 'revoked', removed, owned: sorted([...owned].filter(p => now.has(p))), how: 'rejoin' })
  const added = sorted([...now].filter(p => !owned.has(p)))
  owned = now
  emit({ ev: 'member', id: e.payload.memberId })
  emit({ ev: 'assigned', added, owned: sorted(owned) })
})
consumer.on(REBALANCING, () => {
  if (owned.size) emit({ ev: 'revoked', removed: sorted(owned), owned: [], how: 'rebalancing' })
  owned = new Set()
})
consumer.on(CRASH, e => {
  emit({ ev: 'error', msg: `crash (restart=${e.payload.restart}): ${e.payload.error && e.payload.error.stack}` })
  if (!e.payload.restart) process.exit(2)
})

let stopping = null
function stop() {
  if (stopping) return stopping
  stopping = (async () => {
    await consumer.disconnect()
    emit({ ev: 'closed' })
    await new Promise(resolve => process.stdout.write('', resolve))
    process.exit(0)
  })().catch(e => {
    emit({ ev: 'error', msg: `disconnect failed: ${e && e.stack || e}` })
    process.exit(3)
  })
  return stopping
}

let input = ''
process.stdin.on('data', chunk => {
  input += chunk.toString()
  const lines = input.split('\n')
  input = lines.pop()
  if (lines.some(l => l.trim() === 'stop')) stop()
})
process.stdin.on('end', stop)
setTimeout(() => {
  emit({ ev: 'error', msg: `lifetime of ${spec.lifetime_s}s reached` })
  stop()
}, spec.lifetime_s * 1000).unref()

async function main() {
  await consumer.connect()
  await consumer.subscribe({ topics: [spec.topic], fromBeginning: true })
  await consumer.run({
    eachBatch: async ({ batch }) => {
      if (batch.messages.length === 0) return
      emit({
        ev: 'records',
        recs: batch.messages.map(m => [batch.partition, Number(m.offset), m.key.toString()]),
      })
    },
  })
}

main().catch(e => {
  emit({ ev: 'error', msg: `run failed: ${e && e.stack || e}` })
  process.exit(1)
})
