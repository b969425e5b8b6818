const test = require('node:test');
const assert = require('node:assert');
const { capitalizeWords } = require('../capitalize');
test('empty', () => assert.strictEqual(capitalizeWords(''), ''));
