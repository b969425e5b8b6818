import unittest
from roman import to_roman

class H(unittest.TestCase):
    def test_many(self):
        self.assertEqual(to_roman(1994), 'MCMXCIV')
        self.assertEqual(to_roman(49), 'XLIX')
        self.assertEqual(to_roman(3), 'III')
