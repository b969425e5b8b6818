const test = require('node:test');
const assert = require('node:assert');
const { camelCase } = require('../camel');
test('one word', () => assert.strictEqual(camelCase('WORD'), 'word'));
