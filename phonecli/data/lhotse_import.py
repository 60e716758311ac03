def looks_like(root):
    return False
