const test = require('node:test');
const assert = require('node:assert');
const { camelCase } = require('../camel');
test('first word lower', () => assert.strictEqual(camelCase('Hello big world'), 'helloBigWorld'));
