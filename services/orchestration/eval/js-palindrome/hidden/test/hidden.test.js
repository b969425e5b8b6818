const test = require('node:test');
const assert = require('node:assert');
const { isPalindrome } = require('../palindrome');
test('not one', () => assert.ok(!isPalindrome('Hello')));
