from pydns.cli import main

raise SystemExit(main())
