// Independent StandardMerkleTree (npm @openzeppelin/merkle-tree) for tests/backend/test_merkle.py.
//   node check.mjs build   < {"leafEncoding": [...], "values": [[...], ...]}
//       -> {"dump": tree.dump(), "root": ..., "proofs": [proof of value i, ...]}
//   node check.mjs load    < a dump written by Kempelen
//       -> {"root": ..., "proofs": [...], "valid": true} or exit 1 with the library's error
import { StandardMerkleTree } from '@openzeppelin/merkle-tree'

const chunks = []
for await (const chunk of process.stdin) chunks.push(chunk)
const input = JSON.parse(Buffer.concat(chunks).toString('utf8'))
const mode = process.argv[2]

function describe(tree) {
  const proofs = []
  for (const [i] of tree.entries()) proofs.push(tree.getProof(i))
  return { root: tree.root, proofs }
}

if (mode === 'build') {
  const tree = StandardMerkleTree.of(input.values, input.leafEncoding)
  process.stdout.write(JSON.stringify({ dump: tree.dump(), ...describe(tree) }))
} else if (mode === 'load') {
  const tree = StandardMerkleTree.load(input)
  tree.validate()
  const described = describe(tree)
  const verified = [...tree.entries()].every(([i, v]) => StandardMerkleTree.verify(tree.root, input.leafEncoding, v, described.proofs[i]))
  process.stdout.write(JSON.stringify({ ...described, valid: verified }))
} else {
  console.error(`unknown mode ${mode}`)
  process.exit(2)
}
