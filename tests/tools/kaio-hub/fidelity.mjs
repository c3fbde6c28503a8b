// Lists and downloads a dataset from kaio-hub with the official JavaScript
// client: node fidelity.mjs HUB_URL ORG/NAME OUT_DIR. Prints {listed, skipped} as JSON.
// @huggingface/hub 1.x puts the path into the URL unencoded, so names with '#',
// '%' or '?' cannot be fetched by it; those are listed but skipped.
import { listFiles, downloadFile } from "@huggingface/hub";
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";

const [hubUrl, name, outDir] = process.argv.slice(2);
const repo = { type: "dataset", name };
const listed = [];
const skipped = [];
for await (const entry of listFiles({ repo, recursive: true, hubUrl })) {
  if (entry.type !== "file") continue;
  listed.push(entry.path);
  if (/[#%?]/.test(entry.path)) {
    skipped.push(entry.path);
    continue;
  }
  const response = await downloadFile({ repo, path: entry.path, hubUrl });
  if (!response) throw new Error(`no content for ${entry.path}`);
  const target = join(outDir, entry.path);
  await mkdir(dirname(target), { recursive: true });
  await writeFile(target, Buffer.from(await response.arrayBuffer()));
}
console.log(JSON.stringify({ listed, skipped }));
