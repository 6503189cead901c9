// Registers KafkaJS codecs for snappy, lz4 and zstd, all pure JS or wasm
// (no native builds, nothing downloaded at install time).
//   snappy: kafkajs-snappy (snappyjs); writes raw snappy, reads raw or xerial-framed.
//   lz4:    lz4js, LZ4 frame format as Kafka (magic v2) expects.
//   zstd:   @bokuweb/zstd-wasm; decodes frames without a content size too (librdkafka's).
const { CompressionTypes, CompressionCodecs } = require('kafkajs')
const SnappyCodec = require('kafkajs-snappy')
const lz4 = require('lz4js')
const zstd = require('@bokuweb/zstd-wasm')

let zstdReady = null
const zstdInit = () => (zstdReady = zstdReady || zstd.init())

const LZ4Codec = () => ({
  async compress(encoder) {
    return Buffer.from(lz4.compress(encoder.buffer))
  },
  async decompress(buffer) {
    return Buffer.from(lz4.decompress(buffer))
  },
})

const ZstdCodec = () => ({
  async compress(encoder) {
    await zstdInit()
    return Buffer.from(zstd.compress(encoder.buffer, 3))
  },
  async decompress(buffer) {
    await zstdInit()
    return Buffer.from(zstd.decompress(buffer))
  },
})

CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec
CompressionCodecs[CompressionTypes.LZ4] = LZ4Codec
CompressionCodecs[CompressionTypes.ZSTD] = ZstdCodec

const BY_NAME = {
  none: CompressionTypes.None,
  gzip: CompressionTypes.GZIP,
  snappy: CompressionTypes.Snappy,
  lz4: CompressionTypes.LZ4,
  zstd: CompressionTypes.ZSTD,
}

module.exports = { compressionType: name => {
  if (!(name in BY_NAME)) throw new Error(`unknown codec ${name}`)
  return BY_NAME[name]
} }
