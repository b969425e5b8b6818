import unittest
from chunking import chunks

class T(unittest.TestCase):
    def test_rest(self):
        self.assertEqual(chunks([1, 2, 3, 4, 5], 2), [[1, 2], [3, 4], [5]])
