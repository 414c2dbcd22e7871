// Validate a .glb with Khronos's glTF-Validator (npm `gltf-validator`, installed by `make setup` into .tools/).
// Usage: node tests/support/gltf_validate.js FILE.glb  -> prints the validator's JSON report on stdout.
const path = require("path");
const fs = require("fs");
const validator = require(path.join(__dirname, "..", "..", ".tools", "node_modules", "gltf-validator"));

const file = process.argv[2];
validator.validateBytes(new Uint8Array(fs.readFileSync(file)), { uri: path.basename(file), maxIssues: 100 })
  .then((report) => { process.stdout.write(JSON.stringify(report)); })
  .catch((err) => { process.stderr.write(String(err) + "\n"); process.exit(1); });
