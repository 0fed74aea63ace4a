// Runs node-postgres named queries (protocol-level prepared statements)
// through Sluice from two clients in turn and prints "ok" when every
// result is right. Usage: node named.js <connection URL>
const { Client } = require('pg');

async function main() {
  const url = process.argv[2];
  const clients = [new Client({ connectionString: url }), new Client({ connectionString: url })];
  for (const c of clients) await c.connect();
  for (let round = 0; round < 20; round++) {
    for (let i = 0; i < clients.length; i++) {
      for (let k = 0; k < 5; k++) {
        const res = await clients[i].query({ name: `q${k}`, text: `SELECT $1::int + ${k} AS v`, values: [round * 10 + i] });
        const want = round * 10 + i + k;
        if (res.rows[0].v !== want) throw new Error(`client ${i} q${k}: got ${res.rows[0].v}, want ${want}`);
      }
    }
  }
  for (const c of clients) await c.end();
  console.log('ok');
}

main().catch((e) => { console.error(e.message); process.exit(1); });
