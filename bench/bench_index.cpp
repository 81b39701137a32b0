int main() { return 0; }  // placeholder: written in this session
