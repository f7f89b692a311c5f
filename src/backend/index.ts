import { TopiaryError } from '../util/errors.js';
import type { Backend } from './backend.js';
import { loadNativeBackend } from './native.js';
import { ReferenceBackend } from './reference.js';

export type BackendKind = 'native' | 'reference' | 'auto';

let nativeBackend: Backend | undefined;
let referenceBackend: Backend | undefined;

function requestedKind(kind: BackendKind): 'native' | 'reference' {
  if (kind !== 'auto') return kind;
  const fromEnv = process.env.TOPIARY_BACKEND;
  if (fromEnv === undefined || fromEnv === '' || fromEnv === 'auto' || fromEnv === 'native') return 'native';
  if (fromEnv === 'reference') return 'reference';
  throw new TopiaryError(`TOPIARY_BACKEND must be 'native', 'reference' or 'auto', not '${fromEnv}'`);
}

/**
 * The process-wide compute backend. 'auto' means the native OpenBLAS addon, or the slow TypeScript
 * reference if the environment says TOPIARY_BACKEND=reference. A missing native addon is an error
 * rather than a silent fallback: the reference is orders of magnitude slower on real models.
 */
export function getBackend(kind: BackendKind = 'auto'): Backend {
  if (requestedKind(kind) === 'reference') {
    referenceBackend ??= new ReferenceBackend();
    return referenceBackend;
  }
  if (!nativeBackend) {
    const loaded = loadNativeBackend();
    if (!loaded.backend) {
      throw new TopiaryError(
        `the native compute backend is not available (${loaded.reason}); run \`npm run setup\` to build it, ` +
          'or set TOPIARY_BACKEND=reference to use the slow TypeScript backend',
      );
    }
    nativeBackend = loaded.backend;
  }
  return nativeBackend;
}

/** One line for logs and benchmark output, e.g. "native, 2 threads, OpenBLAS 0.3.21 ... (Haswell)". */
export function describeBackend(backend: Backend = getBackend()): string {
  const { name, threads, library } = backend.info;
  return `${name}, ${threads} thread${threads === 1 ? '' : 's'}, ${library}`;
}

/**
 * The kernel the backend's matrix products run: "OpenBLAS SkylakeX", "OpenBLAS Haswell", … (the
 * core OpenBLAS chose at load time, which OPENBLAS_CORETYPE can force to a slower one), or the
 * TypeScript reference.
 */
export function backendKernel(backend: Backend = getBackend()): string {
  if (backend.info.name === 'reference') return 'TypeScript reference';
  return `OpenBLAS ${/\(core (\S+)\)/.exec(backend.info.library)?.[1] ?? 'unknown core'}`;
}
