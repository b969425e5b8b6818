const test = require('node:test');
const assert = require('node:assert');
const { capitalizeWords } = require('../capitalize');
test('every word', () => assert.strictEqual(capitalizeWords('hello big world'), 'Hello Big World'));
