const test = require('node:test');
const assert = require('node:assert');
const { cartTotal } = require('../cart');
test('no discount', () => assert.strictEqual(cartTotal([{ price: 3, quantity: 3 }], 0), 9));
