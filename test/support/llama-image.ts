/**
 * A llama-server container image made locally (nothing can be pulled from a registry here):
 * llama-server, its own .so files and the system libraries `ldd` lists are copied into a root
 * folder and `docker import`ed with the official image's entrypoint (/app/llama-server).
 * When the build beside llama-server has ggml-rpc-server (GGML_RPC=ON, as
 * lab/build-llama-cpp.sh builds it), it goes in too, at /app/ggml-rpc-server with its
 * libraries: one image serves both roles of a split, as the kit's rpc image does
 * (`llama-container.sh up --entrypoint /app/ggml-rpc-server`).
 * When Debian's busybox-static is installed (/bin/busybox), it goes in too, as /bin/sh and
 * /bin/wget, so that a Docker `--health-cmd` can run inside the container
 * (.ci should `apt-get install -y busybox-static`; without it the image has no shell).
 * The image carries label kimi-kit.llama-build = sha256 over what went in; an image of that
 * name with the same label is reused.
 */
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  lstatSync,
  readlinkSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { llamaServerPath } from "../../lab/llama-cpp";

export const BUILD_LABEL = "kimi-kit.llama-build";
const BUSYBOX = "/bin/busybox";
const RPC_SERVER = "ggml-rpc-server";

export interface LlamaServerImage {
  name: string;
  /** sha256:… image ID. */
  id: string;
  /** Value of label kimi-kit.llama-build. */
  buildId: string;
  /** /bin/sh and /bin/wget (busybox) exist in the image, so `--health-cmd` works. */
  hasShell: boolean;
  /** /app/ggml-rpc-server exists in the image (the build beside llama-server has it). */
  hasRpcServer: boolean;
  /** False when an image with the same build label was already there. */
  built: boolean;
}

/** Libraries `ldd` resolves for `binary`, plus the program interpreter: absolute paths on this machine. */
function lddLibraries(binary: string): string[] {
  const out = execFileSync("ldd", [binary], { stdio: ["ignore", "pipe", "pipe"] }).toString();
  if (/not found/.test(out)) throw new Error(`ldd ${binary} cannot resolve everything:\n${out}`);
  const libs: string[] = [];
  for (const line of out.split("\n")) {
    const arrow = /=>\s+(\/\S+)/.exec(line);
    const bare = /^\s+(\/\S+)\s+\(/.exec(line);
    const lib = arrow?.[1] ?? bare?.[1];
    if (lib) libs.push(lib);
  }
  return libs;
}

function docker(args: string[], input?: Buffer): string {
  return execFileSync("docker", args, { input, stdio: ["pipe", "pipe", "pipe"], maxBuffer: 64 * 1024 * 1024 })
    .toString()
    .trim();
}

function imageLabel(name: string): string | undefined {
  try {
    const label = docker(["image", "inspect", "--format", `{{index .Config.Labels "${BUILD_LABEL}"}}`, name]);
    return label === "<no value>" ? undefined : label;
  } catch {
    return undefined;
  }
}

export function buildLlamaServerImage(
  name = process.env.KIMI_KIT_LLAMA_IMAGE ?? "local/llama.cpp:server-test",
): LlamaServerImage {
  const server = llamaServerPath();
  const binDir = dirname(server);
  // The build's own shared objects (real files and their soname links) and the system ones.
  const ownLibs = readdirSync(binDir)
    .filter((f) => /^lib.*\.so(\.\d+)*$/.test(f))
    .sort();
  const ownLibSet = new Set(ownLibs.map((f) => join(binDir, f)));
  // The RPC worker from the same build: a split must run one build on every host.
  const rpcServer = join(binDir, RPC_SERVER);
  const hasRpcServer = existsSync(rpcServer);
  const programs = [server, ...(hasRpcServer ? [rpcServer] : [])];
  const systemLibs = [...new Set(programs.flatMap(lddLibraries))]
    .filter((p) => !ownLibSet.has(p) && dirname(p) !== binDir)
    .sort();
  const hasShell = existsSync(BUSYBOX);

  const hash = createHash("sha256");
  hash.update("format=2\0");
  for (const file of [
    ...programs,
    ...ownLibs.map((f) => join(binDir, f)),
    ...systemLibs,
    ...(hasShell ? [BUSYBOX] : []),
  ]) {
    hash.update(`${file}\0`);
    hash.update(lstatSync(file).isSymbolicLink() ? `link:${readlinkSync(file)}` : readFileSync(file));
  }
  const buildId = hash.digest("hex");

  if (imageLabel(name) === buildId) {
    return {
      name,
      id: docker(["image", "inspect", "--format", "{{.Id}}", name]),
      buildId,
      hasShell,
      hasRpcServer,
      built: false,
    };
  }

  const rootfs = mkdtempSync(join(tmpdir(), "kimi-kit-llama-rootfs-"));
  try {
    const app = join(rootfs, "app");
    mkdirSync(app, { recursive: true });
    mkdirSync(join(rootfs, "tmp"), { recursive: true });
    copyFileSync(server, join(app, "llama-server"));
    if (hasRpcServer) copyFileSync(rpcServer, join(app, RPC_SERVER));
    for (const file of ownLibs) {
      const src = join(binDir, file);
      if (lstatSync(src).isSymbolicLink()) symlinkSync(readlinkSync(src), join(app, file));
      else copyFileSync(src, join(app, file));
    }
    for (const lib of systemLibs) {
      const dest = join(rootfs, lib);
      mkdirSync(dirname(dest), { recursive: true });
      copyFileSync(lib, dest); // follows symlinks: /lib64/ld-linux-x86-64.so.2 becomes a file
    }
    if (hasShell) {
      mkdirSync(join(rootfs, "bin"), { recursive: true });
      copyFileSync(BUSYBOX, join(rootfs, "bin", "busybox"));
      for (const applet of ["sh", "wget", "cat", "ls"]) symlinkSync("busybox", join(rootfs, "bin", applet));
    }
    execFileSync("chmod", ["-R", "a+rX", rootfs]);
    execFileSync("chmod", ["1777", join(rootfs, "tmp")]);
    const tar = execFileSync("tar", ["-C", rootfs, "--owner=0", "--group=0", "-c", "."], {
      maxBuffer: 1024 * 1024 * 1024,
    });
    docker(
      [
        "import",
        "-c",
        "ENV LD_LIBRARY_PATH=/app",
        "-c",
        "ENV PATH=/app:/bin",
        "-c",
        'ENTRYPOINT ["/app/llama-server"]',
        "-c",
        `LABEL ${BUILD_LABEL}=${buildId}`,
        "-",
        name,
      ],
      tar,
    );
  } finally {
    rmSync(rootfs, { recursive: true, force: true });
  }
  const id = docker(["image", "inspect", "--format", "{{.Id}}", name]);
  if (imageLabel(name) !== buildId)
    throw new Error(`docker import made ${name} (${id}) without label ${BUILD_LABEL}=${buildId}`);
  return { name, id, buildId, hasShell, hasRpcServer, built: true };
}
