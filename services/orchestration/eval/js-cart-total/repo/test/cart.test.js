const test = require('node:test');
const assert = require('node:assert');
const { cartTotal } = require('../cart');
test('ten percent', () => assert.strictEqual(cartTotal([{ price: 50, quantity: 4 }], 10), 180));
