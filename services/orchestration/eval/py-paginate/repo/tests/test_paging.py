import unittest
from paging import paginate

class T(unittest.TestCase):
    def test_first(self):
        self.assertEqual(paginate(list(range(10)), 0, 3), [0, 1, 2])
