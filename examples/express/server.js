// A receiver for Herald's webhooks, as the documentation's Express example should be written:
//  - verify over the RAW body (express.raw), not JSON.stringify(req.body): re-serialising only works for bodies
//    that happen to round-trip, and a receiver should not depend on that;
//  - compare in constant time (crypto.timingSafeEqual);
//  - deduplicate on X-Webhook-Id: deliveries are at least once.
// The documented signature covers the body only, not a timestamp, so it cannot give replay protection by time;
// for that, verify the Standard Webhooks headers (see ../standard-webhooks), whose timestamp is signed.
//
//   WEBHOOK_SECRET=… PORT=3000 node server.js        (Debian: apt install nodejs node-express; NODE_PATH=/usr/share/nodejs)
const express = require('express');
const crypto = require('crypto');

const secret = process.env.WEBHOOK_SECRET;
if (!secret) {
  console.error('set WEBHOOK_SECRET to the config\'s secret');
  process.exit(2);
}
const seen = new Set(); // use a table with a unique key in production

const app = express();
app.post('/webhooks', express.raw({ type: 'application/json', limit: '1mb' }), (req, res) => {
  const given = Buffer.from(req.get('X-Webhook-Signature') || '', 'utf8');
  const expected = Buffer.from(crypto.createHmac('sha256', secret).update(req.body).digest('hex'), 'utf8');
  if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) {
    console.log('rejected: invalid signature');
    return res.status(401).send('Invalid signature');
  }
  const id = req.get('X-Webhook-Id');
  if (seen.has(id)) {
    return res.status(200).send('OK (duplicate)');
  }
  seen.add(id);
  const { event, data } = JSON.parse(req.body.toString('utf8'));
  console.log(`accepted ${event} ${id} ${JSON.stringify(data)}`);
  res.status(200).send('OK');
});

const port = Number(process.env.PORT || 3000);
const host = process.env.HOST || '127.0.0.1';
app.listen(port, host, () => console.log(`listening on ${host}:${port}`));
