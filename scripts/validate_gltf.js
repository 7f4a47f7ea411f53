// Validate glTF/GLB files with the Khronos glTF validator (npm package
// gltf-validator, installed into .node/ by scripts/install_node_tools.sh).
// Usage: node scripts/validate_gltf.js FILE.glb [...]
// Prints one JSON report summary per file (one line each); exit code 1 if any
// file has errors, 2 if the validator package is missing.
"use strict";
const fs = require("fs");
const path = require("path");

let validator;
try {
    validator = require(path.join(__dirname, "..", ".node", "node_modules", "gltf-validator"));
} catch (e) {
    console.error("gltf-validator not installed; run: bash scripts/install_node_tools.sh");
    process.exit(2);
}

async function main() {
    let failed = false;
    for (const file of process.argv.slice(2)) {
        const bytes = new Uint8Array(fs.readFileSync(file));
        const report = await validator.validateBytes(bytes, {
            uri: path.basename(file),
            maxIssues: 200,
            externalResourceFunction: (uri) => Promise.reject(new Error("external resources not allowed: " + uri)),
        });
        const issues = report.issues;
        const messages = issues.messages.map((m) => ({ code: m.code, severity: m.severity, pointer: m.pointer, message: m.message }));
        console.log(JSON.stringify({
            file: file, numErrors: issues.numErrors, numWarnings: issues.numWarnings,
            numInfos: issues.numInfos, messages: messages,
        }));
        if (issues.numErrors > 0) failed = true;
    }
    process.exit(failed ? 1 : 0);
}

main().catch((e) => { console.error(String(e)); process.exit(3); });
