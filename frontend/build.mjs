// Build step of the app's front end: copy the plain sources and the pinned OpenSeadragon build into
// the Python package (sic_share/app/static), so that `pip install` needs no Node and the app loads
// nothing from the internet. Run: npm ci && npm run build
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "sic_share", "app", "static");
const osd = join(here, "node_modules", "openseadragon");
const pkg = JSON.parse(readFileSync(join(osd, "package.json"), "utf8"));

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "openseadragon"), { recursive: true });
for (const name of ["index.html", "app.js", "app.css"]) cpSync(join(here, "src", name), join(out, name));
cpSync(join(osd, "build", "openseadragon", "openseadragon.min.js"), join(out, "openseadragon", "openseadragon.min.js"));
cpSync(join(osd, "build", "openseadragon", "images"), join(out, "openseadragon", "images"), { recursive: true });
cpSync(join(osd, "LICENSE.txt"), join(out, "openseadragon", "LICENSE.txt"));
writeFileSync(join(out, "VERSIONS.json"),
  JSON.stringify({ openseadragon: { version: pkg.version, license: pkg.license } }, null, 2) + "\n");
console.log(`built ${out} (openseadragon ${pkg.version}, ${pkg.license})`);
