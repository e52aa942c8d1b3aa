// A scenario through the TypeScript client that @hey-api/openapi-ts generates from
// the service's OpenAPI document (into ./client, by tests/server/test_generated_clients.py),
// compiled with `tsc --strict` and run against the production command.
import { client } from './client/client.gen';
import {
  createProduct,
  deleteProduct,
  getProduct,
  issueToken,
  listProducts,
  patchProduct,
  readMe,
  register,
} from './client/sdk.gen';
import type { ProductRead, TokenPairRead } from './client/types.gen';

// Node's own, declared here so the scenario needs no type packages.
declare const process: { env: Record<string, string | undefined>; exit(code: number): never };

function check(condition: boolean, what: string): asserts condition {
  if (!condition) {
    throw new Error(`failed: ${what}`);
  }
}

async function main(): Promise<void> {
  const baseUrl = process.env.BASE_URL;
  check(baseUrl !== undefined, 'BASE_URL is set');
  client.setConfig({ baseUrl });
  const name = `ts${Date.now()}`;
  const password = 'a typescript passphrase';

  const registered = await register({
    body: { username: name, email: `${name}@example.com`, password },
  });
  check(registered.response.status === 201, 'register: 201');

  const signedIn = await issueToken({ body: { username: name, password } });
  const tokens: TokenPairRead | undefined = signedIn.data;
  check(tokens !== undefined, 'sign in: a token pair');
  const auth = { Authorization: `Bearer ${tokens.access_token}` };

  const me = await readMe({ headers: auth });
  check(me.data?.username === name, 'the account reads back');

  const created = await createProduct({
    body: { name: 'Typed teapot', price: '19.90', sku: `TS-${Date.now()}` },
    headers: auth,
  });
  const product: ProductRead | undefined = created.data;
  check(product !== undefined && product.version === 1, 'create: version 1');

  const page = await listProducts({ query: { q: 'typed teapot', sort: '-price', limit: 5 } });
  check(page.data?.items.some((item) => item.id === product.id) === true, 'the list has it');

  const read = await getProduct({ path: { product_id: product.id } });
  const etag = read.response.headers.get('ETag');
  check(etag === '"1"', 'an ETag of the version');
  const patched = await patchProduct({
    path: { product_id: product.id },
    body: { price: 17.5 },
    headers: { ...auth, 'If-Match': etag },
  });
  check(patched.data?.version === 2 && patched.data.price === 17.5, 'patch with If-Match');

  const refreshed = await issueToken({
    body: { grant_type: 'refresh_token', refresh_token: tokens.refresh_token },
  });
  const fresh = refreshed.data;
  check(fresh !== undefined && fresh.refresh_token !== tokens.refresh_token, 'refresh grant');

  const deleted = await deleteProduct({
    path: { product_id: product.id },
    headers: { Authorization: `Bearer ${fresh.access_token}` },
  });
  check(deleted.response.status === 204, 'delete: 204');
}

main().then(
  () => console.log('typescript scenario passed'),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
