// Independent IPFS implementation (js-ipfs-unixfs, @ipld/car) used by tests/backend/test_ipfs_*.py
// to check Kempelen's CIDs, CARs and gateway without trusting Kempelen's own code.
//   node check.mjs cid <file> <cidVersion> [chunkSize maxLinks]   -> prints the root CID
//   node check.mjs car-read <file.car | http URL>                 -> JSON: roots, blocks, file sha256/size
//   node check.mjs car-make <file> <cidVersion> <out.car>         -> writes a CAR, prints the root CID
//   node check.mjs gateway-raw <gatewayBase> <cid>                -> JSON: file sha256/size via ?format=raw
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { exporter } from 'ipfs-unixfs-exporter'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { CarBlockIterator, CarWriter } from '@ipld/car'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import { Readable } from 'node:stream'

const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i])

async function verified (cid, bytes) {
  if (cid.multihash.code !== sha256.code) throw new Error(`unexpected hash in ${cid}`)
  const digest = await sha256.digest(bytes)
  if (!equal(digest.digest, cid.multihash.digest)) throw new Error(`block does not hash to ${cid}`)
  return bytes
}

async function importFile (path, version, chunkSize = 262144, maxLinks = 174) {
  const blockstore = new MemoryBlockstore()
  const written = []
  const put = blockstore.put.bind(blockstore)
  blockstore.put = async (cid, bytes, opts) => { written.push({ cid, bytes }); return put(cid, bytes, opts) }
  const options = {
    cidVersion: version,
    rawLeaves: version === 1,
    chunker: fixedSize({ chunkSize }),
    layout: balanced({ maxChildrenPerNode: maxLinks }),
    reduceSingleLeafToSelf: true
  }
  let root
  for await (const entry of importer([{ content: fs.createReadStream(path) }], blockstore, options)) root = entry.cid
  return { root, blockstore, written }
}

async function fileDigest (root, blockstore) {
  const entry = await exporter(root, blockstore)
  const hash = createHash('sha256')
  let size = 0
  for await (const chunk of entry.content()) { hash.update(chunk); size += chunk.length }
  return { sha256: hash.digest('hex'), size }
}

async function carStream (source) {
  if (source.startsWith('http')) {
    const response = await fetch(source, { headers: { accept: 'application/vnd.ipld.car' } })
    if (response.status !== 200) throw new Error(`HTTP ${response.status}`)
    return { stream: Readable.fromWeb(response.body), contentType: response.headers.get('content-type') }
  }
  return { stream: fs.createReadStream(source), contentType: null }
}

const [command, ...args] = process.argv.slice(2)
if (command === 'cid') {
  const [path, version, chunkSize, maxLinks] = args
  const { root } = await importFile(path, Number(version), Number(chunkSize || 262144), Number(maxLinks || 174))
  console.log(root.toString())
} else if (command === 'car-read') {
  const { stream, contentType } = await carStream(args[0])
  const blocks = await CarBlockIterator.fromIterable(stream)
  const roots = await blocks.getRoots()
  const blockstore = new MemoryBlockstore()
  const order = []
  for await (const { cid, bytes } of blocks) {
    await blockstore.put(cid, await verified(cid, bytes))
    order.push(cid.toString())
  }
  const file = await fileDigest(roots[0], blockstore)
  console.log(JSON.stringify({ roots: roots.map(String), blocks: order, contentType, ...file }))
} else if (command === 'car-make') {
  const [path, version, out] = args
  const { root, written } = await importFile(path, Number(version))
  const { writer, out: bytes } = CarWriter.create([root])
  const done = Readable.from(bytes).pipe(fs.createWriteStream(out))
  for (const block of written) await writer.put(block)
  await writer.close()
  await new Promise((resolve, reject) => done.on('finish', resolve).on('error', reject))
  console.log(root.toString())
} else if (command === 'gateway-raw') {
  // A trustless client: every block fetched alone (?format=raw) and hash-checked before use.
  const [base, cidText] = args
  const fetched = []
  const blockstore = {
    // blockstore-core 7 interface: get() yields the block's bytes
    async * get (cid) {
      const response = await fetch(`${base}/ipfs/${cid}?format=raw`, { headers: { accept: 'application/vnd.ipld.raw' } })
      if (response.status !== 200) throw new Error(`HTTP ${response.status} for ${cid}`)
      fetched.push(cid.toString())
      yield await verified(cid, new Uint8Array(await response.arrayBuffer()))
    },
    async * getMany () { throw new Error('unused') }
  }
  const file = await fileDigest(CID.parse(cidText), blockstore)
  console.log(JSON.stringify({ blocksFetched: fetched.length, ...file }))
} else {
  console.error(`unknown command ${command}`)
  process.exit(2)
}
