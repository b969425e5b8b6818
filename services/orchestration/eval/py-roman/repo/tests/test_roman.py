import unittest
from roman import to_roman

class T(unittest.TestCase):
    def test_four(self):
        self.assertEqual(to_roman(4), 'IV')
