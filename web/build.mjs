// Builds the web app into dist/ (committed, embedded in the vault binary). The same sources
// and lockfile give the same bytes: `node build.mjs --check` rebuilds into a temporary folder
// and fails when dist/ differs.
import * as esbuild from "esbuild";
import { copyFileSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

const check = process.argv.includes("--check");
const out = check ? mkdtempSync(join(tmpdir(), "osprey-web-")) : "dist";

await esbuild.build({
  entryPoints: ["src/main.tsx"],
  bundle: true,
  minify: true,
  format: "iife",
  target: "es2022",
  jsx: "automatic",
  jsxImportSource: "preact",
  legalComments: "none",
  outfile: join(out, "app.js"),
  logLevel: "warning",
});
copyFileSync("src/index.html", join(out, "index.html"));
copyFileSync("src/app.css", join(out, "app.css"));
copyFileSync("src/icon.svg", join(out, "icon.svg"));

for (const file of readdirSync(out).sort()) {
  const bytes = readFileSync(join(out, file));
  console.log(`${file}: ${bytes.length} bytes, ${gzipSync(bytes).length} gzip`);
}
if (check) {
  const stale = readdirSync(out).filter((f) => !readFileSync(join(out, f)).equals(readFileSync(join("dist", f))));
  rmSync(out, { recursive: true });
  if (stale.length) {
    console.error(`web/dist is stale (${stale.join(", ")}): run scripts/web-build and commit web/dist`);
    process.exit(1);
  }
  console.log("web/dist matches its sources");
}
