import unittest
from paging import paginate

class H(unittest.TestCase):
    def test_last(self):
        self.assertEqual(paginate(list(range(10)), 3, 3), [9])
    def test_beyond(self):
        self.assertEqual(paginate([1, 2], 5, 2), [])
