import unittest
from chunking import chunks

class H(unittest.TestCase):
    def test_even(self):
        self.assertEqual(chunks([1, 2, 3, 4], 2), [[1, 2], [3, 4]])
        self.assertEqual(chunks([], 3), [])
